package fakesmtp

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/internal/testcert"
	"github.com/mailgate/mailgate/oauth"
)

const (
	alice      = "alice@example.com"
	bob        = "bob@example.com"
	aliceToken = "ya29.alice-token"
	bobToken   = "ya29.bob-token"

	// What smtp.gmail.com sends as the XOAUTH2 error challenge.
	gmailChallengeB64 = "eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ=="
)

func testMsg(from string) string {
	return "From: Support <" + from + ">\r\n" +
		"To: carol@example.net\r\n" +
		"Subject: [#42] your printer\r\n" +
		"Message-ID: <42.1@mailgate.test>\r\n" +
		"\r\n" +
		"It is fixed.\r\n"
}

// The fake OAuth server's Validate plugs straight into GmailOptions.
var _ = GmailOptions{Validate: (*fakeoauth.Server)(nil).Validate}

func validate(token string) (string, bool) {
	switch token {
	case aliceToken:
		return alice, true
	case bobToken:
		return bob, true
	}
	return "", false
}

func newCA(t *testing.T) *testcert.CA {
	t.Helper()
	ca, err := testcert.New()
	if err != nil {
		t.Fatalf("testcert.New: %v", err)
	}
	return ca
}

func newGmail(t *testing.T, opts GmailOptions) (*Server, *testcert.CA) {
	t.Helper()
	ca := newCA(t)
	if opts.TLS == nil {
		opts.TLS = ca.ServerTLS("smtp.gmail.com")
	}
	if opts.Validate == nil {
		opts.Validate = validate
	}
	s, err := NewGmail(opts)
	if err != nil {
		t.Fatalf("NewGmail: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, ca
}

func newMX(t *testing.T, opts MXOptions) *Server {
	t.Helper()
	s, err := NewMX(opts)
	if err != nil {
		t.Fatalf("NewMX: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dialStartTLS connects with go-smtp's client and runs STARTTLS, as the
// relay does towards smtp.gmail.com:587.
func dialStartTLS(t *testing.T, addr string, ca *testcert.CA) *smtp.Client {
	t.Helper()
	return dialStartTLSAs(t, addr, ca, "smtp.gmail.com")
}

func dialStartTLSAs(t *testing.T, addr string, ca *testcert.CA, serverName string) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(addr, ca.ClientTLS(serverName))
	if err != nil {
		t.Fatalf("DialStartTLS %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialPlain(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatalf("Dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func authXOAUTH2(t *testing.T, c *smtp.Client, user, token string) {
	t.Helper()
	if err := c.Auth(oauth.NewXOAUTH2Client(user, token)); err != nil {
		t.Fatalf("Auth XOAUTH2 as %s: %v", user, err)
	}
}

// send runs one transaction and says at which step it failed.
func send(c *smtp.Client, from string, to []string, data string) (step string, err error) {
	if err := c.Mail(from, nil); err != nil {
		return "MAIL", err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return "RCPT", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "DATA", err
	}
	if _, err := w.Write([]byte(data)); err != nil {
		return "DATA write", err
	}
	if err := w.Close(); err != nil {
		return "end of DATA", err
	}
	return "", nil
}

// wantSMTPError checks that err is an *smtp.SMTPError with want's codes and
// a message that starts with want's.
func wantSMTPError(t *testing.T, what string, err error, want *smtp.SMTPError) *smtp.SMTPError {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("%s = %v (%T), want *smtp.SMTPError %d %v", what, err, err, want.Code, want.EnhancedCode)
	}
	if se.Code != want.Code || se.EnhancedCode != want.EnhancedCode || !strings.HasPrefix(se.Message, want.Message) {
		t.Fatalf("%s = %d %v %q, want %d %v %q...", what, se.Code, se.EnhancedCode, se.Message, want.Code, want.EnhancedCode, want.Message)
	}
	return se
}

// raw is a line-level client for checking replies byte for byte.
type raw struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	r := &raw{t: t, conn: conn, r: bufio.NewReader(conn)}
	r.read() // greeting
	return r
}

// read returns one reply, each line without its CRLF.
func (r *raw) read() []string {
	r.t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var lines []string
	for {
		line, err := r.r.ReadString('\n')
		if err != nil {
			r.t.Fatalf("read reply: %v (so far %q)", err, lines)
		}
		if !strings.HasSuffix(line, "\r\n") {
			r.t.Fatalf("reply line %q does not end in CRLF", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] == ' ' {
			return lines
		}
	}
}

func (r *raw) cmd(line string) []string {
	r.t.Helper()
	if _, err := fmt.Fprintf(r.conn, "%s\r\n", line); err != nil {
		r.t.Fatalf("write %q: %v", line, err)
	}
	return r.read()
}

func (r *raw) startTLS(cfg *tls.Config) {
	r.t.Helper()
	if got := r.cmd("STARTTLS"); !strings.HasPrefix(got[0], "220 ") {
		r.t.Fatalf("STARTTLS = %q", got)
	}
	tc := tls.Client(r.conn, cfg)
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("TLS handshake: %v", err)
	}
	r.conn, r.r = tc, bufio.NewReader(tc)
}

func xoauth2IR(user, token string) string {
	return base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
}

// gsmtpTail matches Gmail's "<id> - gsmtp" reply tail.
const gsmtpTail = ` [0-9a-f]{12}\.[0-9]+ - gsmtp`

func wantLines(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s = %q, want %d lines matching %q", what, got, len(want), want)
	}
	for i := range want {
		if !regexp.MustCompile("^" + want[i] + "$").MatchString(got[i]) {
			t.Fatalf("%s line %d = %q, want match for %q", what, i, got[i], want[i])
		}
	}
}

func TestGmailWire(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{})
	r := dialRaw(t, s.Addr())

	ehlo := r.cmd("EHLO client.test")
	if !slices.Contains(ehlo, "250-STARTTLS") {
		t.Errorf("EHLO before TLS = %q, want STARTTLS", ehlo)
	}
	for _, l := range ehlo {
		if strings.Contains(l, "AUTH") {
			t.Errorf("EHLO before TLS lists %q; Gmail offers AUTH only after STARTTLS", l)
		}
	}
	wantLines(t, "AUTH before STARTTLS", r.cmd("AUTH XOAUTH2 "+xoauth2IR(alice, aliceToken)),
		`530 5\.7\.0 Must issue a STARTTLS command first\.`+gsmtpTail)
	wantLines(t, "MAIL before STARTTLS", r.cmd("MAIL FROM:<"+alice+">"),
		`530 5\.7\.0 Must issue a STARTTLS command first\.`+gsmtpTail)

	r.startTLS(ca.ClientTLS("smtp.gmail.com"))
	ehlo = r.cmd("EHLO client.test")
	if !slices.Contains(ehlo, "250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH") {
		t.Errorf("EHLO after TLS = %q, want Gmail's AUTH list", ehlo)
	}
	if slices.ContainsFunc(ehlo, func(l string) bool { return strings.Contains(l, "STARTTLS") }) {
		t.Errorf("EHLO after TLS = %q, still offers STARTTLS", ehlo)
	}
	wantLines(t, "MAIL before AUTH", r.cmd("MAIL FROM:<"+alice+">"),
		`530-5\.7\.0 Authentication Required\. For more information, go to`,
		`530 5\.7\.0  https://support\.google\.com/mail/\?p=WantAuthError`+gsmtpTail)

	// A token Validate does not know: the JSON challenge, then 535.
	wantLines(t, "AUTH with a bad token", r.cmd("AUTH XOAUTH2 "+xoauth2IR(alice, "ya29.expired")),
		`334 `+regexp.QuoteMeta(gmailChallengeB64))
	wantLines(t, "empty response to the challenge", r.cmd(""),
		`535-5\.7\.8 Username and Password not accepted\. For more information, go to`,
		`535 5\.7\.8  https://support\.google\.com/mail/\?p=BadCredentials`+gsmtpTail)

	// Bob's token does not open Alice's account.
	wantLines(t, "AUTH with another account's token", r.cmd("AUTH XOAUTH2 "+xoauth2IR(alice, bobToken)),
		`334 `+regexp.QuoteMeta(gmailChallengeB64))
	r.cmd("")

	wantLines(t, "AUTH XOAUTH2", r.cmd("AUTH XOAUTH2 "+xoauth2IR(alice, aliceToken)), `235 2\.7\.0 Accepted`)
	wantLines(t, "second AUTH", r.cmd("AUTH XOAUTH2 "+xoauth2IR(alice, aliceToken)), `503 5\.5\.1 Already authenticated`+gsmtpTail)
	wantLines(t, "MAIL", r.cmd("MAIL FROM:<"+alice+">"), `250 .*`)
	wantLines(t, "RCPT", r.cmd("RCPT TO:<carol@example.net>"), `250 .*`)
	wantLines(t, "DATA", r.cmd("DATA"), `354 .*`)
	wantLines(t, "end of DATA", r.cmd(testMsg(alice)+"."), `250 2\.0\.0 OK  [0-9]+`+gsmtpTail)

	msgs := s.Received()
	if len(msgs) != 1 {
		t.Fatalf("Received() = %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != alice || !slices.Equal(m.To, []string{"carol@example.net"}) || m.AuthUser != alice || !m.TLS || m.Helo != "client.test" {
		t.Errorf("Received()[0] = from %q to %q auth %q tls %v helo %q", m.From, m.To, m.AuthUser, m.TLS, m.Helo)
	}
	if string(m.Data) != testMsg(alice) {
		t.Errorf("Data = %q, want %q", m.Data, testMsg(alice))
	}
}

func TestGmailXOAUTH2(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{})
	c := dialStartTLS(t, s.Addr(), ca)
	authXOAUTH2(t, c, alice, aliceToken)
	if step, err := send(c, alice, []string{"carol@example.net", "dave@example.org"}, testMsg(alice)); err != nil {
		t.Fatalf("send: %s: %v", step, err)
	}
	msgs := s.Received()
	if len(msgs) != 1 || msgs[0].AuthUser != alice || !msgs[0].TLS || len(msgs[0].To) != 2 || msgs[0].FromRewritten {
		t.Fatalf("Received() = %+v", msgs)
	}
	if err := c.Quit(); err != nil {
		t.Errorf("Quit: %v", err)
	}
}

func TestGmailBadToken(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{})
	c := dialStartTLS(t, s.Addr(), ca)
	client := oauth.NewXOAUTH2Client(alice, "ya29.revoked")
	err := c.Auth(client)
	se := wantSMTPError(t, "Auth with a revoked token", err, ErrBadCredentials)
	if !strings.HasSuffix(se.Message, " - gsmtp") {
		t.Errorf("message %q lacks Gmail's tail", se.Message)
	}
	want := oauth.XOAUTH2Error{Status: "400", Schemes: "Bearer", Scope: "https://mail.google.com/"}
	if got := client.LastError(); got == nil || *got != want {
		t.Errorf("LastError() = %+v, want %+v", got, want)
	}
	var xe *oauth.XOAUTH2Error
	if err := oauth.Explain(client, err); !errors.As(err, &xe) || !errors.As(err, &se) {
		t.Errorf("Explain = %v, want both the SMTP and the XOAUTH2 error", err)
	}

	// The client is still usable for a fresh attempt... but not as Alice
	// without her token: MAIL is refused.
	if _, err := send(c, alice, []string{"carol@example.net"}, testMsg(alice)); err == nil {
		t.Fatalf("send after a failed AUTH succeeded")
	} else {
		wantSMTPError(t, "MAIL after a failed AUTH", err, ErrAuthRequired)
	}
	if n := len(s.Received()); n != 0 {
		t.Errorf("Received() = %d messages, want 0", n)
	}
}

func TestGmailAuthBeforeStartTLS(t *testing.T) {
	s, _ := newGmail(t, GmailOptions{})
	c := dialPlain(t, s.Addr())
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Errorf("no STARTTLS in EHLO")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Errorf("AUTH offered before STARTTLS")
	}
	err := c.Auth(oauth.NewXOAUTH2Client(alice, aliceToken))
	wantSMTPError(t, "Auth before STARTTLS", err, ErrMustStartTLS)
	err = c.Mail(alice, nil)
	wantSMTPError(t, "Mail before STARTTLS", err, ErrMustStartTLS)
}

func TestGmailImplicitTLS(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{Implicit: true})
	c, err := smtp.DialTLS(s.Addr(), ca.ClientTLS("smtp.gmail.com"))
	if err != nil {
		t.Fatalf("DialTLS: %v", err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Errorf("STARTTLS offered on an implicit-TLS port")
	}
	authXOAUTH2(t, c, bob, bobToken)
	if step, err := send(c, bob, []string{"carol@example.net"}, testMsg(bob)); err != nil {
		t.Fatalf("send: %s: %v", step, err)
	}
	if m := s.WaitFor(1, time.Second); len(m) != 1 || !m[0].TLS || m[0].AuthUser != bob {
		t.Errorf("Received() = %+v", m)
	}
}

func TestGmailOAuthBearer(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{})

	c := dialStartTLS(t, s.Addr(), ca)
	good := oauth.Mechanism([]string{"OAUTHBEARER"}, alice, aliceToken)
	if err := c.Auth(good); err != nil {
		t.Fatalf("Auth OAUTHBEARER: %v", err)
	}
	if step, err := send(c, alice, []string{"carol@example.net"}, testMsg(alice)); err != nil {
		t.Fatalf("send: %s: %v", step, err)
	}

	c = dialStartTLS(t, s.Addr(), ca)
	bad := oauth.Mechanism([]string{"OAUTHBEARER"}, alice, "ya29.nope")
	err := oauth.Explain(bad, c.Auth(bad))
	wantSMTPError(t, "Auth OAUTHBEARER with a bad token", err, ErrBadCredentials)
	var xe *oauth.XOAUTH2Error
	if !errors.As(err, &xe) || xe.Status != "400" {
		t.Errorf("Explain = %v, want the 400 challenge", err)
	}
}

func TestGmailPasswordsRefused(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{})
	for _, client := range []sasl.Client{
		sasl.NewPlainClient("", alice, "hunter2"),
		sasl.NewLoginClient(alice, "hunter2"),
	} {
		c := dialStartTLS(t, s.Addr(), ca)
		mech, _, _ := client.Start()
		wantSMTPError(t, "Auth "+mech, c.Auth(client), ErrBadCredentials)
	}
	c := dialStartTLS(t, s.Addr(), ca)
	wantSMTPError(t, "Auth XOAUTH", c.Auth(fixedMech("XOAUTH")), ErrUnrecognizedAuth)
}

// fixedMech is a SASL client that only names a mechanism.
type fixedMech string

func (m fixedMech) Start() (string, []byte, error) { return string(m), []byte("x"), nil }
func (m fixedMech) Next([]byte) ([]byte, error)    { return nil, sasl.ErrUnexpectedServerChallenge }

func TestGmailDailyLimit(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{})
	s.SetDailyLimitReached("Alice@Example.com", true)

	c := dialStartTLS(t, s.Addr(), ca)
	authXOAUTH2(t, c, alice, aliceToken)
	step, err := send(c, alice, []string{"carol@example.net"}, testMsg(alice))
	if step != "end of DATA" {
		t.Errorf("daily limit came at %q (%v), want at the end of DATA", step, err)
	}
	se := wantSMTPError(t, "send over the daily limit", err, ErrDailyLimit)
	if !strings.HasSuffix(se.Message, " - gsmtp") {
		t.Errorf("message %q lacks Gmail's tail", se.Message)
	}

	// The same connection goes on working for the next message, and other
	// accounts are not affected.
	s.SetDailyLimitReached(alice, false)
	if step, err := send(c, alice, []string{"carol@example.net"}, testMsg(alice)); err != nil {
		t.Fatalf("send after the limit was lifted: %s: %v", step, err)
	}
	s.SetDailyLimitReached(alice, true)
	c2 := dialStartTLS(t, s.Addr(), ca)
	authXOAUTH2(t, c2, bob, bobToken)
	if step, err := send(c2, bob, []string{"carol@example.net"}, testMsg(bob)); err != nil {
		t.Fatalf("send as bob: %s: %v", step, err)
	}
	if n := len(s.Received()); n != 2 {
		t.Errorf("Received() = %d messages, want 2 (the refused one is not kept)", n)
	}

	// On the wire: Gmail's three lines.
	r := dialRaw(t, s.Addr())
	r.cmd("EHLO client.test")
	r.startTLS(ca.ClientTLS("smtp.gmail.com"))
	r.cmd("EHLO client.test")
	r.cmd("AUTH XOAUTH2 " + xoauth2IR(alice, aliceToken))
	r.cmd("MAIL FROM:<" + alice + ">")
	r.cmd("RCPT TO:<carol@example.net>")
	r.cmd("DATA")
	wantLines(t, "end of DATA over the limit", r.cmd(testMsg(alice)+"."),
		`550-5\.4\.5 Daily user sending limit exceeded\. For more information on Gmail`,
		`550-5\.4\.5 sending limits go to`,
		`550 5\.4\.5  https://support\.google\.com/a/answer/166852`+gsmtpTail)
}

func TestGmailTryAgainLater(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{})
	s.FailNext(1, ErrTryAgainLater)

	c := dialStartTLS(t, s.Addr(), ca)
	authXOAUTH2(t, c, alice, aliceToken)
	step, err := send(c, alice, []string{"carol@example.net"}, testMsg(alice))
	if step != "end of DATA" {
		t.Errorf("421 came at %q, want at the end of DATA", step)
	}
	se := wantSMTPError(t, "first send", err, ErrTryAgainLater)
	if !se.Temporary() {
		t.Errorf("421 is not Temporary()")
	}
	// 421 closes the connection.
	if err := c.Noop(); err == nil {
		t.Errorf("NOOP after 421 succeeded; the connection should be closed")
	}

	c = dialStartTLS(t, s.Addr(), ca)
	authXOAUTH2(t, c, alice, aliceToken)
	if step, err := send(c, alice, []string{"carol@example.net"}, testMsg(alice)); err != nil {
		t.Fatalf("retry: %s: %v", step, err)
	}
	if n := len(s.Received()); n != 1 {
		t.Errorf("Received() = %d messages, want exactly 1", n)
	}
}

func TestGmailFromRewritten(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{Aliases: map[string][]string{alice: {"Support@Example.com"}}})
	c := dialStartTLS(t, s.Addr(), ca)
	authXOAUTH2(t, c, alice, aliceToken)
	for _, from := range []string{alice, "support@example.com", "someone@else.example"} {
		if step, err := send(c, from, []string{"carol@example.net"}, testMsg(from)); err != nil {
			t.Fatalf("send from %s: %s: %v", from, step, err)
		}
	}
	msgs := s.Received()
	for i, want := range []bool{false, false, true} {
		if msgs[i].FromRewritten != want {
			t.Errorf("From %s: FromRewritten = %v, want %v", msgs[i].From, msgs[i].FromRewritten, want)
		}
	}
	if msgs[2].From != "someone@else.example" {
		t.Errorf("envelope From = %q, want it recorded as given", msgs[2].From)
	}
	// Gmail delivers the foreign From as the account; the alias as sent.
	if !bytes.Contains(msgs[2].Data, []byte("From: \"Support\" <"+alice+">")) || bytes.Contains(msgs[2].Data, []byte("someone@else.example")) {
		t.Errorf("foreign From not rewritten to the account:\n%s", msgs[2].Data)
	}
	if !bytes.Equal(msgs[1].Data, []byte(testMsg("support@example.com"))) {
		t.Errorf("alias message changed:\n%s", msgs[1].Data)
	}
	// An alias removed in Gmail's settings is rewritten too.
	s.SetAliases(alice)
	if step, err := send(c, alice, []string{"carol@example.net"}, testMsg("support@example.com")); err != nil {
		t.Fatalf("send: %s: %v", step, err)
	}
	if m := s.Received()[3]; !m.FromRewritten {
		t.Error("From of a removed alias: not rewritten")
	}
}

func TestGmailTooManyRecipients(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{})
	c := dialStartTLS(t, s.Addr(), ca)
	authXOAUTH2(t, c, alice, aliceToken)
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := c.Rcpt(fmt.Sprintf("r%d@example.net", i), nil); err != nil {
			t.Fatalf("RCPT %d: %v", i+1, err)
		}
	}
	wantSMTPError(t, "RCPT 101", c.Rcpt("r100@example.net", nil), ErrTooManyRecipients)
}

func TestTranscriptHasNoSecrets(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{})
	c := dialStartTLS(t, s.Addr(), ca)
	c.Auth(oauth.NewXOAUTH2Client(alice, "ya29.wrong-token"))
	authXOAUTH2(t, c, alice, aliceToken)
	send(c, alice, []string{"carol@example.net"}, testMsg(alice))
	c.Auth(sasl.NewPlainClient("", alice, "hunter2"))

	tr := s.Transcript()
	joined := strings.Join(tr, "\n")
	for _, secret := range []string{aliceToken, "ya29.wrong-token", "hunter2", xoauth2IR(alice, aliceToken)} {
		if strings.Contains(joined, secret) {
			t.Errorf("transcript contains %q:\n%s", secret, joined)
		}
	}
	for _, want := range []string{
		"C: EHLO localhost",
		"C: STARTTLS",
		"C: AUTH XOAUTH2 user=alice@example.com auth=Bearer [redacted]",
		"S: 334 " + gmailChallengeB64,
		"S: 235 2.7.0 Accepted",
		"C: MAIL FROM:<alice@example.com>",
		"C: RCPT TO:<carol@example.net>",
		fmt.Sprintf("C: (%d bytes)", len(testMsg(alice))),
	} {
		if !slices.Contains(tr, want) {
			t.Errorf("transcript lacks %q:\n%s", want, joined)
		}
	}
	if len(s.Transcripts()) != 1 {
		t.Errorf("Transcripts() = %d, want 1 connection", len(s.Transcripts()))
	}
	s.Reset()
	if s.Transcript() != nil || len(s.Received()) != 0 {
		t.Errorf("Reset left a transcript or messages")
	}
}

func TestWaitFor(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{})
	go func() {
		time.Sleep(50 * time.Millisecond)
		c, err := smtp.DialStartTLS(s.Addr(), ca.ClientTLS("smtp.gmail.com"))
		if err != nil {
			t.Errorf("dial: %v", err)
			return
		}
		defer c.Close()
		if err := c.Auth(oauth.NewXOAUTH2Client(alice, aliceToken)); err != nil {
			t.Errorf("auth: %v", err)
			return
		}
		if step, err := send(c, alice, []string{"carol@example.net"}, testMsg(alice)); err != nil {
			t.Errorf("send: %s: %v", step, err)
		}
	}()
	if got := s.WaitFor(1, 5*time.Second); len(got) != 1 {
		t.Fatalf("WaitFor(1) = %d messages", len(got))
	}
	start := time.Now()
	if got := s.WaitFor(2, 100*time.Millisecond); len(got) != 1 {
		t.Errorf("WaitFor(2) after timeout = %d messages, want 1", len(got))
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Errorf("WaitFor(2) returned before its timeout")
	}
}

func TestNewGmailNeedsOptions(t *testing.T) {
	ca := newCA(t)
	if _, err := NewGmail(GmailOptions{Validate: validate}); err == nil {
		t.Errorf("NewGmail without TLS succeeded")
	}
	if _, err := NewGmail(GmailOptions{TLS: ca.ServerTLS()}); err == nil {
		t.Errorf("NewGmail without Validate succeeded")
	}
}

func TestMXDelivery(t *testing.T) {
	ca := newCA(t)
	s := newMX(t, MXOptions{Domains: []string{"Example.net"}, TLS: ca.ServerTLS("mx.example.net")})

	// Plaintext: STARTTLS is offered, not required.
	c := dialPlain(t, s.Addr())
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Errorf("MX with TLS does not offer STARTTLS")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Errorf("MX offers AUTH")
	}
	if err := c.Mail("support@mailgate.test", nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	wantSMTPError(t, "RCPT outside the domains", c.Rcpt("eve@other.example", nil), ErrNoSuchUser)
	if err := c.Rcpt("carol@example.net", nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(testMsg("support@mailgate.test")))
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	if !regexp.MustCompile(`^2\.0\.0 Ok: queued as [0-9A-F]{10}$`).MatchString(resp.StatusText) {
		t.Errorf("250 text = %q", resp.StatusText)
	}

	// Over STARTTLS.
	c = dialStartTLSAs(t, s.Addr(), ca, "127.0.0.1")
	if step, err := send(c, "support@mailgate.test", []string{"dave@example.net"}, testMsg("support@mailgate.test")); err != nil {
		t.Fatalf("send over TLS: %s: %v", step, err)
	}

	msgs := s.Received()
	if len(msgs) != 2 {
		t.Fatalf("Received() = %d messages, want 2", len(msgs))
	}
	if msgs[0].TLS || !msgs[1].TLS {
		t.Errorf("TLS = %v, %v; want false, true", msgs[0].TLS, msgs[1].TLS)
	}
	if !slices.Equal(msgs[0].To, []string{"carol@example.net"}) || msgs[0].AuthUser != "" {
		t.Errorf("Received()[0] = %+v", msgs[0])
	}
	if !strings.HasSuffix(resp.StatusText, msgs[0].ID) {
		t.Errorf("ID %q is not the one in the reply %q", msgs[0].ID, resp.StatusText)
	}
}

func TestMXInjectedFailures(t *testing.T) {
	s := newMX(t, MXOptions{Domains: []string{"example.net"}})
	mailboxFull := &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
	rejected := &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message rejected as spam"}

	c := dialPlain(t, s.Addr())
	s.FailRcpt("Carol@example.net", mailboxFull)
	_, err := send(c, "support@mailgate.test", []string{"carol@example.net"}, testMsg("support@mailgate.test"))
	wantSMTPError(t, "RCPT to a full mailbox", err, mailboxFull)
	c.Reset()
	s.FailRcpt("carol@example.net", nil)

	// 4xx then success, then a 5xx.
	s.FailData(1, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure"})
	s.FailData(1, rejected)
	step, err := send(c, "support@mailgate.test", []string{"carol@example.net"}, testMsg("support@mailgate.test"))
	if se := wantSMTPError(t, "first send", err, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure"}); !se.Temporary() || step != "end of DATA" {
		t.Errorf("first send failed at %q, temporary %v", step, se.Temporary())
	}
	_, err = send(c, "support@mailgate.test", []string{"carol@example.net"}, testMsg("support@mailgate.test"))
	if se := wantSMTPError(t, "second send", err, rejected); se.Temporary() {
		t.Errorf("554 is Temporary()")
	}
	if step, err := send(c, "support@mailgate.test", []string{"carol@example.net"}, testMsg("support@mailgate.test")); err != nil {
		t.Fatalf("third send: %s: %v", step, err)
	}
	if n := len(s.Received()); n != 1 {
		t.Errorf("Received() = %d, want 1", n)
	}

	// A 421 at RCPT closes the connection.
	s.FailRcpt("carol@example.net", &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Shutting down"})
	c = dialPlain(t, s.Addr())
	c.Mail("support@mailgate.test", nil)
	wantSMTPError(t, "RCPT with an injected 421", c.Rcpt("carol@example.net", nil), &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Shutting down"})
	if err := c.Noop(); err == nil {
		t.Errorf("NOOP after a 421 succeeded")
	}
}

func TestMXDropNext(t *testing.T) {
	ca := newCA(t)
	s := newMX(t, MXOptions{TLS: ca.ServerTLS()})
	s.DropNext()

	c := dialStartTLSAs(t, s.Addr(), ca, "127.0.0.1")
	step, err := send(c, "support@mailgate.test", []string{"carol@example.net"}, testMsg("support@mailgate.test"))
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		t.Fatalf("send with a dropped connection = %s: %v, want a connection error", step, err)
	}
	if step != "end of DATA" {
		t.Errorf("dropped at %q, want at the end of DATA", step)
	}
	if n := len(s.Received()); n != 0 {
		t.Errorf("Received() = %d, want 0", n)
	}
	if tr := s.Transcript(); tr[len(tr)-1] != "S: (connection dropped)" {
		t.Errorf("transcript ends %q", tr[len(tr)-1])
	}

	c = dialStartTLSAs(t, s.Addr(), ca, "127.0.0.1")
	if step, err := send(c, "support@mailgate.test", []string{"carol@example.net"}, testMsg("support@mailgate.test")); err != nil {
		t.Fatalf("retry: %s: %v", step, err)
	}
	if n := len(s.WaitFor(1, time.Second)); n != 1 {
		t.Errorf("Received() = %d, want 1", n)
	}

	// The dropped try is no copy; a second send of the same message to
	// two recipients is a second copy for one of them.
	if step, err := send(c, "support@mailgate.test", []string{"Carol@example.net", "dave@example.net"}, testMsg("support@mailgate.test")); err != nil {
		t.Fatalf("second send: %s: %v", step, err)
	}
	want := map[Delivery]int{{"42.1@mailgate.test", "carol@example.net"}: 2, {"42.1@mailgate.test", "dave@example.net"}: 1}
	if got := s.Deliveries(); !maps.Equal(got, want) {
		t.Errorf("Deliveries() = %v, want %v", got, want)
	}
}

func TestSmarthost(t *testing.T) {
	users := map[string]string{"relay": "s3cret"}

	t.Run("plaintext", func(t *testing.T) {
		s := newMX(t, MXOptions{Users: users})
		c := dialPlain(t, s.Addr())
		if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
			t.Errorf("AUTH extension = %v %q", ok, mechs)
		}
		wantSMTPError(t, "MAIL before AUTH", c.Mail("support@mailgate.test", nil), errMXAuthRequired)
		wantSMTPError(t, "AUTH PLAIN with a wrong password", c.Auth(sasl.NewPlainClient("", "relay", "guess")), errMXAuthFailed)

		c = dialPlain(t, s.Addr())
		if err := c.Auth(sasl.NewLoginClient("relay", "s3cret")); err != nil {
			t.Fatalf("AUTH LOGIN: %v", err)
		}
		if step, err := send(c, "support@mailgate.test", []string{"carol@example.net"}, testMsg("support@mailgate.test")); err != nil {
			t.Fatalf("send: %s: %v", step, err)
		}
		if m := s.Received(); len(m) != 1 || m[0].AuthUser != "relay" {
			t.Errorf("Received() = %+v", m)
		}
	})

	t.Run("tls", func(t *testing.T) {
		ca := newCA(t)
		s := newMX(t, MXOptions{Users: users, TLS: ca.ServerTLS()})
		c := dialPlain(t, s.Addr())
		if ok, _ := c.Extension("AUTH"); ok {
			t.Errorf("AUTH offered before STARTTLS")
		}
		wantSMTPError(t, "AUTH before STARTTLS", c.Auth(sasl.NewPlainClient("", "relay", "s3cret")), ErrMustStartTLS)

		c = dialStartTLSAs(t, s.Addr(), ca, "127.0.0.1")
		if err := c.Auth(sasl.NewPlainClient("", "relay", "s3cret")); err != nil {
			t.Fatalf("AUTH PLAIN: %v", err)
		}
		if step, err := send(c, "support@mailgate.test", []string{"carol@example.net"}, testMsg("support@mailgate.test")); err != nil {
			t.Fatalf("send: %s: %v", step, err)
		}
		if !strings.Contains(strings.Join(s.Transcript(), "\n"), "S: 235 2.7.0 Authentication successful") {
			t.Errorf("transcript:\n%s", strings.Join(s.Transcript(), "\n"))
		}
	})
}
