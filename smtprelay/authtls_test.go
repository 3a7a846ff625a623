package smtprelay

import (
	"crypto/tls"
	"encoding/base64"
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/mailgate/mailgate/internal/testcert"
)

// fromAddr makes every connection accepted by l appear to come from
// remote: tests can only connect over loopback, and the relay's policy
// depends on where a client is.
func fromAddr(remote string) func(net.Listener) net.Listener {
	return func(l net.Listener) net.Listener {
		return peerListener{l, &net.TCPAddr{IP: net.ParseIP(remote), Port: 40000}}
	}
}

type peerListener struct {
	net.Listener
	remote net.Addr
}

func (l peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return peerConn{c, l.remote}, nil
}

type peerConn struct {
	net.Conn
	remote net.Addr
}

func (c peerConn) RemoteAddr() net.Addr { return c.remote }

// NetConn lets the relay reach the TCP connection, as under TLS.
func (c peerConn) NetConn() net.Conn { return c.Conn }

func plainIR(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// TestAuthOnlyAfterTLSOffLoopback: a client off loopback is not offered
// AUTH before STARTTLS, is refused without being asked for credentials,
// and logs in once the connection is encrypted.
func TestAuthOnlyAfterTLSOffLoopback(t *testing.T) {
	ca, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	e := startRelayOn(t, ServerOptions{Users: map[string]string{"helpdesk": string(hash)}, TLS: ca.ServerTLS("relay.test")}, fromAddr("203.0.113.7"))

	c := dialRaw(t, e.addr)
	ehlo := c.cmd("EHLO helpdesk.test")
	if strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("plaintext EHLO to a remote client:\n%s\nwant STARTTLS and no AUTH", ehlo)
	}
	if got := c.cmd("AUTH LOGIN"); !strings.HasPrefix(got, "530 5.7.0 Must issue a STARTTLS command first") {
		t.Errorf("AUTH LOGIN before STARTTLS: %q, want 530 5.7.0 before any 334 prompt", got)
	}
	if got := c.cmd("AUTH PLAIN " + plainIR("helpdesk", "s3cret")); !strings.HasPrefix(got, "530 5.7.0") {
		t.Errorf("AUTH PLAIN with credentials before STARTTLS: %q, want 530 5.7.0", got)
	}
	if got := c.cmd("MAIL FROM:<support@acme.test>"); !strings.HasPrefix(got, "530") {
		t.Errorf("MAIL without AUTH: %q, want 530", got)
	}

	if got := c.cmd("STARTTLS"); !strings.HasPrefix(got, "220") {
		t.Fatalf("STARTTLS: %q", got)
	}
	tc := tls.Client(c.c, ca.ClientTLS("relay.test"))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.c = tc
	c.br.Reset(tc)
	if ehlo := c.cmd("EHLO helpdesk.test"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO over TLS:\n%s\nwant AUTH PLAIN LOGIN", ehlo)
	}
	if got := c.cmd("AUTH PLAIN " + plainIR("helpdesk", "s3cret")); !strings.HasPrefix(got, "235") {
		t.Errorf("AUTH over TLS: %q, want 235", got)
	}
}

// TestAuthOffLoopbackWithoutTLS: with no certificate at all, a remote
// client is never offered AUTH and is told why (538), while a loopback
// client keeps logging in as before.
func TestAuthOffLoopbackWithoutTLS(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	users := map[string]string{"helpdesk": string(hash)}
	remote := startRelayOn(t, ServerOptions{Users: users}, fromAddr("2001:db8::25"))
	c := dialRaw(t, remote.addr)
	if ehlo := c.cmd("EHLO helpdesk.test"); strings.Contains(ehlo, "AUTH") {
		t.Errorf("EHLO to a remote client without TLS advertises AUTH:\n%s", ehlo)
	}
	if got := c.cmd("AUTH PLAIN"); !strings.HasPrefix(got, "538 5.7.11") {
		t.Errorf("AUTH PLAIN from a remote client without TLS: %q, want 538 5.7.11", got)
	}

	local := startRelay(t, ServerOptions{Users: users})
	c = dialRaw(t, local.addr)
	if ehlo := c.cmd("EHLO helpdesk.test"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO on loopback:\n%s\nwant AUTH PLAIN LOGIN", ehlo)
	}
	if got := c.cmd("AUTH PLAIN " + plainIR("helpdesk", "s3cret")); !strings.HasPrefix(got, "235") {
		t.Errorf("AUTH on loopback: %q, want 235", got)
	}
}
