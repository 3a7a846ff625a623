package smtprelay

import (
	"bytes"
	"context"
	"mime"
	"net"
	"strconv"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/testcert"
)

// TestSMTPUTF8Announced: EHLO lists SMTPUTF8; a non-ASCII address is
// refused with 553 5.6.7 unless MAIL FROM said SMTPUTF8, and taken when it
// did.
func TestSMTPUTF8Announced(t *testing.T) {
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback, AllowedSenders: []string{"acme.test", "bücher.example"}})
	converse(t, e.addr, []smtpLine{
		{"EHLO helpdesk.test", 250, "SMTPUTF8"},
		{"MAIL FROM:<jörg@acme.test>", 553, "5.6.7 Sender address <j\\u00f6rg@acme.test> refused: it contains non-ASCII characters: say SMTPUTF8 on MAIL FROM"},
		{"MAIL FROM:<support@acme.test>", 250, ""},
		{"RCPT TO:<bob@bücher.example>", 553, "5.6.7 Recipient address"},
		{"RSET", 250, ""},
		{"MAIL FROM:<jörg@bücher.example> SMTPUTF8", 250, ""},
		{"RCPT TO:<用户@例子.广告>", 250, ""},
		{"DATA", 354, ""},
		{"From: Jörg <jörg@bücher.example>\r\nSubject: Grüße\r\n\r\nHallo\r\n.", 250, "queued as"},
		{"QUIT", 221, ""},
	})
}

// utf8Mail is a notification with raw UTF-8 in its header (as Postfix's
// sendmail submits a UTF-8 subject) and an attachment, so it goes direct.
const utf8Mail = "From: Åsa Support <support@acme.example>\r\nTo: bob@bücher.example\r\nSubject: Ihre Bestellung: Grüße aus Köln\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n\r\nDanke schön.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=r.pdf\r\n" +
	"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"

// useMX points the direct route at a new fake MX made with opts.
func (w *relayWorld) useMX(opts fakesmtp.MXOptions) {
	w.t.Helper()
	ca, _ := testcert.New()
	opts.TLS = ca.ServerTLS("mx.customer.example")
	mx, err := fakesmtp.NewMX(opts)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { mx.Close() })
	w.mx = mx
	_, port, _ := net.SplitHostPort(mx.Addr())
	w.relay.own.(*mxRoute).opts.Port, _ = strconv.Atoi(port)
	w.relay.own.(*mxRoute).opts.TLS = ca.ClientTLS("")
}

// submitUTF8 sends data with SMTPUTF8 on MAIL FROM and returns the queue
// id.
func submitUTF8(t *testing.T, addr, from string, to []string, data string) string {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail(from, &smtp.MailOptions{UTF8: true}); err != nil {
		t.Fatal(err)
	}
	for _, rc := range to {
		if err := c.Rcpt(rc, nil); err != nil {
			t.Fatal(err)
		}
	}
	wc, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	wc.Write([]byte(data))
	resp, err := wc.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusText[strings.LastIndex(resp.StatusText, " ")+1:]
}

func (w *relayWorld) verifyDKIM(data []byte) {
	w.t.Helper()
	verifs, err := msgdkim.VerifyWithOptions(bytes.NewReader(data), &msgdkim.VerifyOptions{LookupTXT: w.lookupTXT})
	if err != nil || len(verifs) != 2 {
		w.t.Fatalf("DKIM: %v, %d signatures; want 2", err, len(verifs))
	}
	for _, v := range verifs {
		if v.Err != nil {
			w.t.Errorf("signature by %s does not verify: %v", v.Domain, v.Err)
		}
	}
}

// TestSMTPUTF8ToAnMXThatOffersIt: the MX gets the message as it came,
// MAIL FROM saying SMTPUTF8, the IDN recipient in UTF-8, signed.
func TestSMTPUTF8ToAnMXThatOffersIt(t *testing.T) {
	w := newRelayWorld(t, 500)
	w.useMX(fakesmtp.MXOptions{SMTPUTF8: true})
	addr := w.serveWorld(ServerOptions{})
	id := submitUTF8(t, addr, wsAcct, []string{"bob@bücher.example"}, utf8Mail)
	w.tryNext()
	got := w.mx.Received()
	if len(got) != 1 || !got[0].UTF8 || got[0].To[0] != "bob@bücher.example" {
		t.Fatalf("MX got %+v; want one message, SMTPUTF8, to bob@bücher.example", got)
	}
	if !bytes.Contains(got[0].Data, []byte("Subject: Ihre Bestellung: Grüße aus Köln\r\n")) {
		t.Errorf("subject not kept in UTF-8:\n%s", got[0].Data)
	}
	if !bytes.Contains(got[0].Data, []byte("id "+id)) {
		t.Errorf("no Received field with queue id %s", id)
	}
	w.verifyDKIM(got[0].Data)

	// Gmail offers SMTPUTF8 too: a UTF-8 subject goes as it came.
	submitUTF8(t, addr, gmailAcct, []string{"bob@bücher.example"}, notif(gmailAcct, "Grüße"))
	w.tryNext()
	if g := w.gmail.Received(); len(g) != 1 || !g[0].UTF8 || !bytes.Contains(g[0].Data, []byte("Subject: Grüße\r\n")) {
		t.Errorf("Gmail got %+v; want one message sent with SMTPUTF8, subject in UTF-8", g)
	}
}

// TestSMTPUTF8DowngradedForAnMXWithout: to an MX without SMTPUTF8 the
// header goes as RFC 2047 encoded-words and the IDN as its A-label, signed
// again; a recipient with a UTF-8 local part, which ASCII cannot say,
// bounces with 5.6.7 and only that one.
func TestSMTPUTF8DowngradedForAnMXWithout(t *testing.T) {
	w := newRelayWorld(t, 500)
	w.useMX(fakesmtp.MXOptions{})
	addr := w.serveWorld(ServerOptions{})
	id := submitUTF8(t, addr, wsAcct, []string{"bob@bücher.example", "jörg@customer.example"}, utf8Mail)
	w.tryNext()
	got := w.mx.Received()
	if len(got) != 1 || got[0].UTF8 || len(got[0].To) != 1 || got[0].To[0] != "bob@xn--bcher-kva.example" {
		t.Fatalf("MX got %+v; want one message without SMTPUTF8, to bob@xn--bcher-kva.example", got)
	}
	head, _, _ := bytes.Cut(got[0].Data, []byte("\r\n\r\n"))
	if !isASCII(string(head)) {
		t.Errorf("downgraded header is not ASCII:\n%s", head)
	}
	subj := regexpField(string(head), "Subject")
	if dec, err := new(mime.WordDecoder).DecodeHeader(subj); err != nil || dec != "Ihre Bestellung: Grüße aus Köln" {
		t.Errorf("Subject %q decodes to %q, %v", subj, dec, err)
	}
	if to := regexpField(string(head), "To"); to != "<bob@xn--bcher-kva.example>" {
		t.Errorf("To %q, want the A-label", to)
	}
	from := regexpField(string(head), "From")
	if dec, _ := new(mime.WordDecoder).DecodeHeader(from); dec != "Åsa Support <support@acme.example>" {
		t.Errorf("From %q decodes to %q", from, dec)
	}
	w.verifyDKIM(got[0].Data)

	m, err := w.q.Get(context.Background(), id, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range m.Rcpts {
		switch r.Addr {
		case "bob@bücher.example":
			if r.State != RcptDelivered {
				t.Errorf("%s: %s %s, want delivered", r.Addr, r.State, r.LastError)
			}
		case "jörg@customer.example":
			if r.State != RcptFailed || !strings.Contains(r.LastError, "does not offer SMTPUTF8") {
				t.Errorf("%s: %s %q, want failed for want of SMTPUTF8", r.Addr, r.State, r.LastError)
			}
		}
	}
	all, err := w.q.List(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	dsns := 0
	for _, m := range all {
		if m.From != "" {
			continue
		}
		dsns++
		full, err := w.q.Get(context.Background(), m.ID, true)
		if err != nil || !bytes.Contains(full.Data, []byte("Status: 5.6.7")) || bytes.Contains(full.Data, []byte("Final-Recipient: rfc822; bob@")) {
			t.Errorf("DSN %v:\n%s\nwant status 5.6.7 for the UTF-8 local part only", err, full.Data)
		}
	}
	if dsns != 1 {
		t.Errorf("%d DSNs queued, want 1", dsns)
	}
}

// regexpField returns the unfolded value of header field k in head.
func regexpField(head, k string) string {
	unfolded := strings.NewReplacer("\r\n ", " ", "\r\n\t", " ").Replace(head)
	for _, line := range strings.Split(unfolded, "\r\n") {
		if v, ok := strings.CutPrefix(line, k+": "); ok {
			return v
		}
	}
	return ""
}
