package smtprelay

import (
	"context"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/tickets"
)

func TestCheckAddress(t *testing.T) {
	ok := []string{
		"support@acme.test",
		"first.last+tag@sub.acme.test",
		"a!#$%&'*+-/=?^_`{|}~z@acme.test",
		"x@xn--bcher-kva.example",
		"jöhn@helpdesk.test", // UTF-8 (RFC 6531): MAIL must say SMTPUTF8, see TestSMTPUTF8Announced
		"x@bücher.example",   // an IDN, delivered as xn--bcher-kva.example
		"用户@例子.广告",
		strings.Repeat("l", 64) + "@acme.test",
	}
	for _, a := range ok {
		if err := checkRecipient(a); err != nil {
			t.Errorf("checkRecipient(%q) = %v, want accepted", a, err)
		}
	}
	bad := map[string]string{ // address as go-smtp hands it over → words the refusal must hold
		"john doe@helpdesk.test":               `local part "john doe" needs quoting`,
		"jo\x00hn@helpdesk.test":               "control character 0x00",
		"tab\there@helpdesk.test":              "control character 0x09",
		"j\xf6hn@helpdesk.test":                "not UTF-8",
		"x@bü_cher.example":                    "not a valid domain",
		"a..b@helpdesk.test":                   "needs quoting",
		".a@helpdesk.test":                     "needs quoting",
		"a@b@helpdesk.test":                    `local part "a@b" needs quoting`,
		"agent@[192.0.2.1]":                    "address literals",
		"agent@helpdesk_test":                  "not a valid domain",
		"agent@helpdesk..test":                 "not a valid domain",
		"agent@":                               "not a valid domain",
		"@helpdesk.test":                       "local part (before the @) is empty",
		"agent":                                "not of the form local-part@domain",
		strings.Repeat("l", 65) + "@acme.test": "more than 64",
		"a@" + strings.Repeat("d.", 130) + "t": "more than the 254",
	}
	for a, want := range bad {
		err := checkRecipient(a)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkRecipient(%q) = %v, want a refusal saying %q", a, err, want)
			continue
		}
		if strings.ContainsAny(err.Error(), "\x00\t\r\n") {
			t.Errorf("refusal of %q carries a control character: %q", a, err.Error())
		}
	}
}

// smtpLine is one command sent as is and the reply it must get.
type smtpLine struct {
	cmd  string
	code int
	want string // text the reply must contain, enhanced code first
}

// converse sends each line on one connection to addr and checks the
// replies, as go-smtp's own server tests do: raw protocol lines on a real
// listener, so nothing in a client library can clean an address up first.
func converse(t *testing.T, addr string, lines []smtpLine) {
	t.Helper()
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	for _, l := range lines {
		if err := c.PrintfLine("%s", l.cmd); err != nil {
			t.Fatal(err)
		}
		code, msg, err := c.ReadResponse(l.code)
		if code != l.code || !strings.Contains(msg, l.want) {
			t.Errorf("%q → %d %s (%v), want %d %s", l.cmd, code, msg, err, l.code, l.want)
		}
	}
}

// TestEnvelopeCheckedAtMailAndRcpt: an envelope no route can deliver is
// refused when it is given, with the reply code and status RFC 5321 and
// RFC 3463 assign and a text that says what is wrong, instead of a 250
// followed by five days of retries. The sender domain is allowed, so the
// syntax check is what refuses.
func TestEnvelopeCheckedAtMailAndRcpt(t *testing.T) {
	var c calls
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback, AllowedSenders: []string{"helpdesk.test"},
		OnAccept: func(accepted bool, reason string) {
			if !accepted {
				c.add(reason)
			}
		}})
	converse(t, e.addr, []smtpLine{
		{"EHLO helpdesk.test", 250, ""},
		{`MAIL FROM:<"john doe"@helpdesk.test>`, 553, `5.1.7 Sender address <john doe@helpdesk.test> refused: the local part "john doe" needs quoting`},
		{"MAIL FROM:<jo\x00hn@helpdesk.test>", 553, `5.1.7 Sender address <jo\x00hn@helpdesk.test> refused: it contains the control character 0x00`},
		{"MAIL FROM:<agent@[192.0.2.1]>", 553, "5.1.7 Sender address <agent@[192.0.2.1]> refused: address literals"},
		{"MAIL FROM:<agent@helpdesk_test>", 553, `5.1.7 Sender address <agent@helpdesk_test> refused: "helpdesk_test" is not a valid domain`},
		{"MAIL FROM:<a..b@helpdesk.test>", 553, "5.1.7"},
		{"MAIL FROM:<spammer@elsewhere.test>", 550, "5.7.1 Sender <spammer@elsewhere.test> refused: not a support address"},
		{"MAIL FROM:<>", 550, "5.7.1"},
		{"MAIL FROM:<agent@helpdesk.test> SIZE=big", 501, "5.5.4"},
		// Quotes that are not needed name the same mailbox (RFC 5321
		// section 4.1.2): agent@helpdesk.test.
		{`MAIL FROM:<"agent"@helpdesk.test>`, 250, ""},
		{`RCPT TO:<"bob smith"@customer.test>`, 553, `5.1.3 Recipient address <bob smith@customer.test> refused: the local part "bob smith" needs quoting`},
		{"RCPT TO:<bob\x00@customer.test>", 553, "5.1.3"},
		{"RCPT TO:<bob@customer..test>", 553, "5.1.3"},
		{"RCPT TO:<bob@[192.0.2.1]>", 553, "5.1.3"},
		{"RCPT TO:<bob@customer.test> A=B=C", 501, "5.5.4"},
		{"RCPT TO:<bob@customer.test>", 250, ""},
		{"DATA", 354, ""},
		{"From: support@acme.test\r\nSubject: hi\r\n\r\nhello\r\n.", 250, "queued as"},
		{"QUIT", 221, ""},
	})
	want := []string{RejectAddress, RejectAddress, RejectAddress, RejectAddress, RejectAddress, RejectSender, RejectSender,
		RejectAddress, RejectAddress, RejectAddress, RejectAddress}
	if got := c.take(); !slices.Equal(got, want) {
		t.Errorf("OnAccept refusals = %q, want %q", got, want)
	}
	ids, err := e.q.List(context.Background(), 10)
	if err != nil || len(ids) != 1 {
		t.Fatalf("queue = %v, %v; want the one good message", ids, err)
	}
	if m := ids[0]; m.From != "agent@helpdesk.test" || !slices.Equal(m.To, []string{"bob@customer.test"}) {
		t.Errorf("queued envelope %s → %q, want agent@helpdesk.test → [bob@customer.test]", m.From, m.To)
	}
}

// TestQueuedBadAddressBouncesAtOnce: a message that reached the queue
// with an address no route can deliver (queued by an older version, or
// written there by another tool) bounces on its first try, not after the
// queue lifetime; the other recipients are delivered.
func TestQueuedBadAddressBouncesAtOnce(t *testing.T) {
	ctx := context.Background()
	t.Run("bad sender", func(t *testing.T) {
		w := newRelayWorld(t, 500)
		m := &Message{From: "john doe@acme.example", To: []string{customer}, Data: []byte(withPDF(wsAcct))}
		if err := w.q.Put(ctx, m); err != nil {
			t.Fatal(err)
		}
		w.tryNext()
		got, _ := w.q.Get(ctx, m.ID, false)
		if got.State != StateBounced || got.Attempts != 1 || len(w.mx.Received())+len(w.gmail.Received()) != 0 {
			t.Fatalf("after one try: %+v, sent %d; want bounced at once, nothing sent", got, len(w.mx.Received())+len(w.gmail.Received()))
		}
		ev := w.eventsOf(tickets.EventDeliveryFailed)
		if len(ev) != 1 || !strings.Contains(ev[0].data["failed"].(map[string]string)[customer], "local part \"john doe\" needs quoting") {
			t.Errorf("delivery.failed events = %+v, want one naming the bad sender", ev)
		}
		// No DSN is queued to an address that cannot receive one.
		if ms, _ := w.q.Next(ctx, "test", 1, 100*time.Millisecond); len(ms) != 0 {
			t.Errorf("queued after the bounce: %+v, want nothing (no DSN to a bad sender)", ms[0])
		}
	})
	t.Run("one bad recipient", func(t *testing.T) {
		w := newRelayWorld(t, 500)
		bad := "bob\x00@customer.example"
		m := &Message{From: wsAcct, To: []string{bad, customer}, Data: []byte(withPDF(wsAcct))}
		if err := w.q.Put(ctx, m); err != nil {
			t.Fatal(err)
		}
		w.tryNext()
		got, _ := w.q.Get(ctx, m.ID, false)
		rcvd := w.mx.Received()
		if got.State != StateSent || got.Attempts != 1 || len(got.Pending()) != 0 || len(rcvd) != 1 || !slices.Equal(rcvd[0].To, []string{customer}) {
			t.Fatalf("after one try: %+v, MX got %+v; want %s delivered and the bad recipient bounced, nothing left to retry", got, rcvd, customer)
		}
		w.tryNext() // the DSN, to the sender
		rcvd = w.mx.Received()
		if len(rcvd) != 2 || rcvd[1].From != "" {
			t.Fatalf("MX got %d messages, want the DSN second", len(rcvd))
		}
		dsn := string(rcvd[1].Data)
		for _, want := range []string{`Final-Recipient: rfc822; bob\x00@customer.example`, "Status: 5.1.3", "control character 0x00"} {
			if !strings.Contains(dsn, want) {
				t.Errorf("DSN lacks %q:\n%s", want, dsn)
			}
		}
		if strings.Contains(dsn, "\x00") {
			t.Error("DSN carries the NUL byte")
		}
	})
}
