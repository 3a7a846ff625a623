package oauth_test

// The XOAUTH2 client on the wire: against scripts that replay Gmail's
// documented replies line by line, and against go-smtp / go-imap servers
// using internal/fakesasl's server (the one the fake Gmail SMTP server uses).

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/fakesasl"
	"github.com/mailgate/mailgate/oauth"
)

// script serves one connection: lines starting "S: " are sent, "C: " are
// expected from the client, exactly. It returns a channel that yields the
// first mismatch (or nil) when the script ends.
func script(t *testing.T, lines []string) (addr string, result <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		for _, line := range lines {
			dir, text, _ := strings.Cut(line, ": ")
			if dir == "S" {
				if _, err := io.WriteString(conn, text+"\r\n"); err != nil {
					done <- err
					return
				}
				continue
			}
			got, err := r.ReadString('\n')
			if err != nil {
				done <- err
				return
			}
			if got = strings.TrimRight(got, "\r\n"); got != text {
				done <- errors.New("client sent " + strings.TrimSpace(got) + ", want " + text)
				return
			}
		}
		done <- nil
	}()
	return l.Addr().String(), done
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

const gmailErrorJSON = `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`

// https://developers.google.com/gmail/imap/xoauth2-protocol, SMTP failure.
func TestXOAUTH2GmailSMTPFailureScript(t *testing.T) {
	ir := "user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
	addr, done := script(t, []string{
		"S: 220 mx.google.com ESMTP 12sm2095603fks.9",
		"C: EHLO localhost",
		"S: 250-mx.google.com at your service, [172.31.135.47]",
		"S: 250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH",
		"S: 250 ENHANCEDSTATUSCODES",
		"C: AUTH XOAUTH2 " + b64(ir),
		"S: 334 " + b64(gmailErrorJSON),
		"C: ", // the empty response Gmail requires
		"S: 535-5.7.8 Username and Password not accepted. Learn more at",
		"S: 535 5.7.8 https://support.google.com/mail/?p=BadCredentials",
	})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	defer c.Close()

	ok, mechs := c.Extension("AUTH")
	if !ok {
		t.Fatal("server does not advertise AUTH")
	}
	sc := oauth.Mechanism(strings.Fields(mechs), "someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
	err = oauth.Explain(sc, c.Auth(sc))
	if err := <-done; err != nil {
		t.Fatalf("script: %v", err)
	}
	var se *smtp.SMTPError
	var xe *oauth.XOAUTH2Error
	if !errors.As(err, &se) || se.Code != 535 || !errors.As(err, &xe) || xe.Status != "400" {
		t.Fatalf("Auth error = %v, want 535 explained by status 400", err)
	}
}

// https://developers.google.com/gmail/imap/xoauth2-protocol, IMAP failure.
func TestXOAUTH2GmailIMAPFailureScript(t *testing.T) {
	ir := "user=someuser@example.com\x01auth=Bearer tok\x01\x01"
	addr, done := script(t, []string{
		"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 AUTH=OAUTHBEARER] Gimap ready",
		"C: T1 AUTHENTICATE XOAUTH2 " + b64(ir),
		"S: + " + b64(gmailErrorJSON),
		// go-imap encodes an empty response as "=" (RFC 4959's spelling
		// for an empty initial response); Gmail documents an empty line.
		"C: =",
		"S: T1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
	})
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WaitGreeting()
	sc := oauth.Mechanism(c.Caps().AuthMechanisms(), "someuser@example.com", "tok")
	err = oauth.Explain(sc, c.Authenticate(sc))
	if err := <-done; err != nil {
		t.Fatalf("script: %v", err)
	}
	var ie *imap.Error
	var xe *oauth.XOAUTH2Error
	if !errors.As(err, &ie) || ie.Code != imap.ResponseCodeAuthenticationFailed || !errors.As(err, &xe) {
		t.Fatalf("Authenticate error = %v, want NO [AUTHENTICATIONFAILED] explained", err)
	}
}

// --- go-smtp server ---

type smtpBackend struct {
	auth func(user, token string) *oauth.XOAUTH2Error
}

func (b smtpBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &smtpSession{b}, nil }

type smtpSession struct{ smtpBackend }

func (*smtpSession) Reset()                               {}
func (*smtpSession) Logout() error                        { return nil }
func (*smtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (*smtpSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (*smtpSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
func (*smtpSession) AuthMechanisms() []string             { return []string{"XOAUTH2"} }
func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	return fakesasl.NewXOAUTH2Server(s.auth), nil
}

func checkToken(user, token string) *oauth.XOAUTH2Error {
	if user == "alice@example.com" && token == "good" {
		return nil
	}
	return &oauth.XOAUTH2Error{Status: "401", Schemes: "Bearer", Scope: oauth.GmailScope}
}

func TestXOAUTH2OverGoSMTP(t *testing.T) {
	s := smtp.NewServer(smtpBackend{checkToken})
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	addr := serve(t, s)
	tryTokens(t, "Auth", func(token string) error {
		c, err := smtp.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc := oauth.NewXOAUTH2Client("alice@example.com", token)
		return oauth.Explain(sc, c.Auth(sc))
	})
}

// serve runs s on a loopback listener until the test ends and returns its
// address.
func serve(t *testing.T, s interface {
	Serve(net.Listener) error
	Close() error
}) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return l.Addr().String()
}

// tryTokens authenticates as alice with the token checkToken accepts and
// with one it refuses; the refusal must come explained by status 401.
func tryTokens(t *testing.T, verb string, auth func(token string) error) {
	t.Helper()
	for _, tc := range []struct {
		token  string
		wantOK bool
	}{{"good", true}, {"bad", false}} {
		err := auth(tc.token)
		if tc.wantOK && err != nil {
			t.Errorf("%s(%s) = %v, want success", verb, tc.token, err)
		}
		var xe *oauth.XOAUTH2Error
		if !tc.wantOK && (!errors.As(err, &xe) || xe.Status != "401") {
			t.Errorf("%s(%s) = %v, want failure explained by status 401", verb, tc.token, err)
		}
	}
}

// --- go-imap server ---

// imapSession implements only what authentication touches; the embedded nil
// Session would panic on anything else.
type imapSession struct {
	imapserver.Session
}

func (imapSession) Close() error                     { return nil }
func (imapSession) Login(string, string) error       { return imapserver.ErrAuthFailed }
func (imapSession) AuthenticateMechanisms() []string { return []string{"XOAUTH2"} }
func (imapSession) Authenticate(mech string) (sasl.Server, error) {
	return fakesasl.NewXOAUTH2Server(checkToken), nil
}

func TestXOAUTH2OverGoIMAP(t *testing.T) {
	s := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return imapSession{}, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}},
		InsecureAuth: true,
		Logger:       discardLogger{},
	})
	addr := serve(t, s)
	tryTokens(t, "Authenticate", func(token string) error {
		c, err := imapclient.DialInsecure(addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc := oauth.Mechanism(c.Caps().AuthMechanisms(), "alice@example.com", token)
		return oauth.Explain(sc, c.Authenticate(sc))
	})
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
