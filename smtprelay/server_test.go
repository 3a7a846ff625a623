package smtprelay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/internal/testcert"
)

type relayEnv struct {
	server *Server
	q      *Queue
	addr   string
	srv    *redistest.Server
}

func startRelay(t *testing.T, opts ServerOptions) *relayEnv {
	t.Helper()
	return startRelayOn(t, opts, nil)
}

// startRelayOn is startRelay with the listener passed through wrap (nil:
// as it is), e.g. to make clients appear from another address.
func startRelayOn(t *testing.T, opts ServerOptions, wrap func(net.Listener) net.Listener) *relayEnv {
	t.Helper()
	srv := redistest.Start(t)
	q := NewQueue(srv.Client(t), QueueOptions{})
	if opts.SupportAddresses == nil {
		opts.SupportAddresses = func(context.Context) ([]string, error) { return []string{"support@acme.test"}, nil }
	}
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = 10 << 10
	}
	opts.Hostname = "relay.test"
	s := NewServer(q, opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if wrap != nil {
		l = wrap(l)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return &relayEnv{server: s, q: q, addr: addr, srv: srv}
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// submit runs one SMTP transaction and returns the final reply's error (nil
// for 250) and the 250 text.
func submit(t *testing.T, addr string, auth sasl.Client, from string, to []string, data string) (string, error) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			return "", err
		}
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	w.Write([]byte(data))
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

func code(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

const notification = "From: Acme Support <support@acme.test>\r\nTo: alice@customer.test\r\nSubject: [#42] We got your request\r\n" +
	"X-Mailgate-Ticket: 42\r\nBcc: boss@acme.test\r\n\r\nHello Alice\r\n"

func TestRelayQueuesBefore250(t *testing.T) {
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback})
	text, err := submit(t, e.addr, nil, "support@acme.test", []string{"alice@customer.test"}, notification)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	_, id, ok := strings.Cut(text, "OK: queued as ")
	if !ok {
		t.Fatalf("250 text %q does not carry the queue id", text)
	}
	m, err := e.q.Get(context.Background(), id, true)
	if err != nil {
		t.Fatalf("queued message %s: %v", id, err)
	}
	d := string(m.Data)
	if m.Ticket != 42 || m.MessageID == "" || !strings.Contains(d, "Message-Id: <"+m.MessageID+">") || !strings.Contains(d, "Date: ") {
		t.Errorf("message = %+v\n%s\nwant ticket 42, a Message-ID and Date added", m, d)
	}
	if strings.Contains(d, "X-Mailgate-Ticket") || strings.Contains(d, "Bcc:") || !strings.HasSuffix(d, "\r\n\r\nHello Alice\r\n") {
		t.Errorf("internal headers not stripped or body changed:\n%s", d)
	}
}

func TestRelayRefusesWhatAnOpenRelayWouldTake(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	users := map[string]string{"helpdesk": string(hash)}
	t.Run("unknown sender", func(t *testing.T) {
		e := startRelay(t, ServerOptions{AllowedNetworks: loopback})
		_, err := submit(t, e.addr, nil, "spammer@elsewhere.test", []string{"victim@x.test"}, "From: support@acme.test\r\nSubject: x\r\n\r\nx\r\n")
		if code(err) != 550 || !strings.Contains(err.Error(), "not a support address") {
			t.Errorf("unknown sender: %v, want 550 with a clear text", err)
		}
	})
	t.Run("no auth from a network not allowed", func(t *testing.T) {
		e := startRelay(t, ServerOptions{Users: users})
		_, err := submit(t, e.addr, nil, "support@acme.test", []string{"a@x.test"}, "From: support@acme.test\r\nSubject: x\r\n\r\nx\r\n")
		if code(err) != 530 {
			t.Errorf("no AUTH: %v, want 530", err)
		}
	})
	t.Run("bad password", func(t *testing.T) {
		e := startRelay(t, ServerOptions{Users: users})
		_, err := submit(t, e.addr, sasl.NewPlainClient("", "helpdesk", "wrong"), "support@acme.test", []string{"a@x.test"}, "x")
		if code(err) != 535 {
			t.Errorf("bad password: %v, want 535", err)
		}
	})
	t.Run("auth ok", func(t *testing.T) {
		e := startRelay(t, ServerOptions{Users: users})
		for _, auth := range []sasl.Client{sasl.NewPlainClient("", "helpdesk", "s3cret"), sasl.NewLoginClient("helpdesk", "s3cret")} {
			if _, err := submit(t, e.addr, auth, "support@acme.test", []string{"a@x.test"}, "From: support@acme.test\r\nSubject: x\r\n\r\nx\r\n"); err != nil {
				t.Errorf("AUTH %T: %v", auth, err)
			}
		}
	})
	t.Run("allowed sender domain", func(t *testing.T) {
		e := startRelay(t, ServerOptions{AllowedNetworks: loopback, AllowedSenders: []string{"billing.acme.test"}})
		if _, err := submit(t, e.addr, nil, "invoices@billing.acme.test", []string{"a@x.test"}, "From: support@acme.test\r\nSubject: x\r\n\r\nx\r\n"); err != nil {
			t.Errorf("allowed domain: %v", err)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		e := startRelay(t, ServerOptions{AllowedNetworks: loopback, MaxMessageBytes: 1000})
		_, err := submit(t, e.addr, nil, "support@acme.test", []string{"a@x.test"}, "From: support@acme.test\r\nSubject: big\r\n\r\n"+strings.Repeat(strings.Repeat("x", 76)+"\r\n", 30))
		if code(err) != 552 {
			t.Errorf("oversized: %v, want 552", err)
		}
	})
}

// TestAuthNeedsTLSOffLoopback checks the rule itself; authtls_test.go
// checks what a client off loopback sees.
func TestAuthNeedsTLSOffLoopback(t *testing.T) {
	if authAllowed(false, false) {
		t.Error("AUTH allowed without TLS from a remote client")
	}
	if !authAllowed(true, false) || !authAllowed(false, true) {
		t.Error("AUTH refused over TLS or from loopback")
	}
}

func TestRedisDownIs451NotA5xx(t *testing.T) {
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback})
	e.srv.Kill()
	_, err := submit(t, e.addr, nil, "support@acme.test", []string{"a@x.test"}, "From: support@acme.test\r\nSubject: x\r\n\r\nx\r\n")
	if code(err) != 451 {
		t.Fatalf("with Redis down: %v, want 451 4.3.0 so the helpdesk retries", err)
	}
}

// TestSetAccessTakesEffect: a configuration reload that adds a sender
// applies to the next connection.
func TestSetAccessTakesEffect(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback})
	e.server.SetAccess(Access{AllowedNetworks: loopback, AllowedSenders: []string{"new.example"}, Users: map[string]string{"u": string(hash)}})
	if _, err := submit(t, e.addr, nil, "x@new.example", []string{"a@x.test"}, "From: support@acme.test\r\nSubject: x\r\n\r\nx\r\n"); err != nil {
		t.Errorf("sender allowed by the reload refused: %v", err)
	}
	e.server.SetAccess(Access{Users: map[string]string{"u": string(hash)}})
	if _, err := submit(t, e.addr, nil, "support@acme.test", []string{"a@x.test"}, "From: support@acme.test\r\nSubject: x\r\n\r\nx\r\n"); code(err) != 530 {
		t.Errorf("after removing the allowed network: %v, want 530", err)
	}
}

// TestStartTLSThenAuth: the helpdesk upgrades with STARTTLS (relay.tls_cert)
// and logs in over the encrypted connection.
func TestStartTLSThenAuth(t *testing.T) {
	ca, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	e := startRelay(t, ServerOptions{Users: map[string]string{"helpdesk": string(hash)}, TLS: ca.ServerTLS("relay.test")})
	c, err := smtp.DialStartTLS(e.addr, ca.ClientTLS("relay.test"))
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer c.Close()
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("connection not encrypted after STARTTLS")
	}
	if err := c.Auth(sasl.NewPlainClient("", "helpdesk", "s3cret")); err != nil {
		t.Fatalf("AUTH over TLS: %v", err)
	}
	if err := c.SendMail("support@acme.test", []string{"a@x.test"}, strings.NewReader("From: support@acme.test\r\nSubject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatalf("send over TLS: %v", err)
	}
	if depth, _, _ := e.q.Stats(context.Background()); depth != 1 {
		t.Errorf("queue depth %d, want the message queued", depth)
	}
}
