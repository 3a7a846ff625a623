package smtprelay

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/mailparse"
)

// TestRealAttachment: realAttachment, which reads the parts without
// decoding them, decides as mailparse.Parse does, whose parts the ticket
// store keeps: a file is a real attachment, an image the HTML shows in
// place is not.
func TestRealAttachment(t *testing.T) {
	const related = "Content-Type: multipart/related; boundary=r\r\n\r\n" +
		"--r\r\nContent-Type: text/html\r\n\r\n<p>Hi</p><img src=\"cid:logo@acme.test\">\r\n" +
		"--r\r\nContent-Type: image/png\r\nContent-ID: <%s>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n--r--\r\n"
	for _, c := range []struct {
		name, ct, disp string
		body           string // replaces the one-line body when set
		want           bool
	}{
		{"no content type", "", "", "", false},
		{"text/plain", "text/plain; charset=utf-8", "", "", false},
		{"text/html", "TEXT/HTML", "", "", false},
		{"text attachment", "text/plain", "attachment; filename=a.txt", "", true},
		{"pdf", "application/pdf", "", "", true},
		{"inline pdf", "application/pdf", "inline", "", false},
		{"image the HTML shows", "", "", fmt.Sprintf(related, "logo@acme.test"), false},
		{"image the HTML does not show", "", "", fmt.Sprintf(related, "other@acme.test"), true},
		{"pdf with broken base64", "", "", "Content-Type: multipart/mixed; boundary=m\r\n\r\n" +
			"--m\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" +
			"--m\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=x.pdf\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n%PDF!!\r\n--m--\r\n", true},
	} {
		raw := "From: a@acme.test\r\nSubject: x\r\n"
		if c.ct != "" {
			raw += "Content-Type: " + c.ct + "\r\n"
		}
		if c.disp != "" {
			raw += "Content-Disposition: " + c.disp + "\r\n"
		}
		if c.body != "" {
			raw += c.body
		} else {
			raw += "\r\nJVBERi0xLjQK\r\n"
		}
		data := []byte(raw)
		got := realAttachment(data)
		parsed := false
		for _, p := range mailparse.Parse(data).Parts {
			parsed = parsed || !p.Inline
		}
		if got != c.want || parsed != c.want {
			t.Errorf("%s: realAttachment = %v, mailparse.Parse says %v; want %v", c.name, got, parsed, c.want)
		}
	}
}

// TestFromWithQuotaIsNotDeferred: a From address that is not the account
// goes another way at once, even on an account whose fallback is defer,
// and even when the address itself says "quota": the reason is a value,
// never text from the message.
func TestFromWithQuotaIsNotDeferred(t *testing.T) {
	w := newRelayWorld(t, 500)
	ctx := context.Background()
	if err := w.acc.SetSending(ctx, gmailAcct, true, accounts.FallbackDefer); err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"alerts@customer.example", "quota-alerts@customer.example", "Over Quota <quota@quota.example>"} {
		m := w.queueAndTry(gmailAcct, strings.Replace(notif(gmailAcct, "n"), "From: Acme <"+gmailAcct+">", "From: "+from, 1))
		if m.State != StateSent || m.Route != RouteDirect {
			t.Errorf("From %q: state %s, route %s; want sent direct like any From that is not the account", from, m.State, m.Route)
		}
	}
	if n := len(w.gmail.Received()); n != 0 {
		t.Errorf("Gmail received %d messages with a foreign From, want 0: it would rewrite the From", n)
	}
	if n := len(w.mx.Received()); n != 3 {
		t.Errorf("MX received %d messages, want 3", n)
	}
	// Over quota, the same account does wait.
	w.gmail.SetDailyLimitReached(gmailAcct, true)
	if m := w.queueAndTry(gmailAcct, notif(gmailAcct, "n")); m.State != StateDeferred || m.Route != RouteDeferred {
		t.Errorf("over Gmail's limit: state %s, route %s; want deferred", m.State, m.Route)
	}
}

// TestGmailRefusesOneRecipient: Gmail takes one recipient and refuses the
// other with its daily limit. The refused one goes direct in the same try;
// the one Gmail took is not sent twice.
func TestGmailRefusesOneRecipient(t *testing.T) {
	w := newRelayWorld(t, 500)
	ctx := context.Background()
	const bob = "bob@customer.example"
	w.gmail.FailRcpt(bob, fakesmtp.ErrDailyLimit)
	m := prepare([]byte(notif(wsAcct, "n")), wsAcct, []string{customer, bob}, "relay.acme.example", w.clock.t, nil)
	if err := w.q.Put(ctx, m); err != nil {
		t.Fatal(err)
	}
	w.tryNext()
	got, err := w.q.Get(ctx, m.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateSent || len(got.Delivered()) != 2 || len(got.Pending()) != 0 {
		t.Fatalf("after the try: %+v, want sent to both", got)
	}
	if g := w.gmail.Received(); len(g) != 1 || !slices.Equal(g[0].To, []string{customer}) {
		t.Errorf("Gmail received %+v, want one message to %s", g, customer)
	}
	if mx := w.mx.Received(); len(mx) != 1 || !slices.Equal(mx[0].To, []string{bob}) {
		t.Errorf("MX received %+v, want one message to %s", mx, bob)
	}
	if _, blocked, _ := w.relay.Quota().Used(ctx, wsAcct); !blocked {
		t.Error("Gmail's daily-limit reply did not block the account")
	}
}

func TestReasonWaitHelps(t *testing.T) {
	seen := map[string]reason{}
	for r := reasonNone; int(r) < len(reasonText); r++ {
		text := r.String()
		if text == "" || text == "unknown reason" {
			t.Errorf("reason %d has no text", r)
		}
		if other, dup := seen[text]; dup {
			t.Errorf("reasons %d and %d both say %q", other, r, text)
		}
		seen[text] = r
		if want := r == reasonOverQuota || r == reasonGmailLimit; r.waitHelps() != want {
			t.Errorf("%q.waitHelps() = %v, want %v", text, !want, want)
		}
	}
}

func TestParseRoute(t *testing.T) {
	for _, r := range routes {
		if got, err := ParseRoute(r.String()); err != nil || got != r {
			t.Errorf("ParseRoute(%q) = %q, %v", r.String(), got, err)
		}
	}
	if _, err := ParseRoute("sideways"); err == nil {
		t.Error(`ParseRoute("sideways") accepted`)
	}
}
