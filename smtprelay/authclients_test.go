package smtprelay

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/testcert"
	"github.com/mailgate/mailgate/tlsmode"
)

// The mail clients helpdesks use log in over STARTTLS from another host:
// each must be refused AUTH in clear, log in after STARTTLS, and be told
// "535" for a wrong password. The relay sees them as 192.0.2.50, so that
// its loopback exception does not apply.

// tlsAuthRelay starts a relay with STARTTLS and the user helpdesk/s3cret,
// whose clients appear to come from a remote address, and returns its
// host, port and the CA file clients must trust.
func tlsAuthRelay(t *testing.T) (e *relayEnv, host, port, caFile string) {
	t.Helper()
	ca, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	caFile, _, _, err = ca.WritePEM(t.TempDir(), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	e = startRelayOn(t, ServerOptions{Users: relayUsers(t), TLS: ca.ServerTLS("localhost"),
		AuthLimits: AuthLimits{FailureDelay: 10 * time.Millisecond}}, fromAddr("192.0.2.50"))
	host, port, _ = net.SplitHostPort(e.addr)
	return e, host, port, caFile
}

// optionalBinary returns the path of name, or skips the test without it.
func optionalBinary(t *testing.T, name, pkg string) string {
	t.Helper()
	if os.Getenv("MG_INTEGRATION") != "1" {
		t.Skipf("set MG_INTEGRATION=1 to run against %s", name)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (apt-get install -y %s)", name, pkg)
	}
	return p
}

func queueDepth(t *testing.T, e *relayEnv) int64 {
	t.Helper()
	depth, _, err := e.q.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return depth
}

const pythonSubmit = `
import smtplib, ssl, sys
host, port, cafile, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = smtplib.SMTP(host, port, local_hostname="helpdesk.example", timeout=20)
s.ehlo()
print("plain-auth:", s.has_extn("auth"))
s.starttls(context=ssl.create_default_context(cafile=cafile))
s.ehlo()
print("tls-auth:", s.has_extn("auth"))
try:
    s.login("helpdesk", password)
except smtplib.SMTPAuthenticationError as e:
    print("login-refused:", e.smtp_code)
    sys.exit(3)
s.sendmail("support@acme.test", ["alice@customer.test"],
    "From: support@acme.test\r\nTo: alice@customer.test\r\nSubject: smtplib\r\n\r\nhello\r\n")
print("sent")
s.quit()
`

func TestIntegrationPythonSmtplibAuth(t *testing.T) {
	python := optionalBinary(t, "python3", "python3")
	e, host, port, caFile := tlsAuthRelay(t)
	script := filepath.Join(t.TempDir(), "submit.py")
	if err := os.WriteFile(script, []byte(pythonSubmit), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(python, script, host, port, caFile, "s3cret").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "plain-auth: False") || !strings.Contains(string(out), "tls-auth: True") || !strings.Contains(string(out), "sent") {
		t.Fatalf("smtplib with the right password: %v\n%s\nwant no AUTH in clear, AUTH after STARTTLS, and the mail sent", err, out)
	}
	if d := queueDepth(t, e); d != 1 {
		t.Errorf("queue depth %d after smtplib's mail, want 1", d)
	}
	out, err = exec.Command(python, script, host, port, caFile, "wrong").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "login-refused: 535") {
		t.Errorf("smtplib with a wrong password: %v\n%s\nwant the login refused with 535", err, out)
	}
}

// msmtpConfig writes an msmtp configuration for the user helpdesk with
// password, trusting caFile. tls is "starttls", "implicit" (TLS from the
// first byte, tls_starttls off) or "off".
func msmtpConfig(t *testing.T, host, port, caFile, password, tls string) string {
	t.Helper()
	on, starttls := "on", "on"
	switch tls {
	case "implicit":
		starttls = "off"
	case "off":
		on = "off"
	}
	p := filepath.Join(t.TempDir(), "msmtprc")
	text := fmt.Sprintf("defaults\nlogfile -\n\naccount relay\nhost %s\nport %s\ndomain helpdesk.example\nfrom support@acme.test\n"+
		"tls %s\ntls_starttls %s\ntls_trust_file %s\nauth plain\nuser helpdesk\npassword %s\n\naccount default : relay\n",
		host, port, on, starttls, caFile, password)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil { // msmtp refuses a config others can read
		t.Fatal(err)
	}
	return p
}

// msmtpSend submits one message with the configuration rc.
func msmtpSend(msmtp, rc string) (string, error) {
	cmd := exec.Command(msmtp, "-C", rc, "--read-envelope-from", "-t")
	cmd.Stdin = strings.NewReader("From: support@acme.test\nTo: alice@customer.test\nSubject: msmtp\n\nhello\n")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestIntegrationMsmtpAuth(t *testing.T) {
	msmtp := optionalBinary(t, "msmtp", "msmtp")
	e, host, port, caFile := tlsAuthRelay(t)
	conf := func(password, tls string) string { return msmtpConfig(t, host, port, caFile, password, tls) }
	send := func(rc string) (string, error) { return msmtpSend(msmtp, rc) }
	if out, err := send(conf("s3cret", "starttls")); err != nil {
		t.Fatalf("msmtp over STARTTLS with the right password: %v\n%s", err, out)
	}
	if d := queueDepth(t, e); d != 1 {
		t.Errorf("queue depth %d after msmtp's mail, want 1", d)
	}
	if out, err := send(conf("wrong", "starttls")); err == nil || !strings.Contains(out, "535 5.7.8") {
		t.Errorf("msmtp with a wrong password: %v\n%s\nwant a failure naming 535", err, out)
	}
	// Without TLS msmtp finds no AUTH to use and sends no password.
	if out, err := send(conf("s3cret", "off")); err == nil || !strings.Contains(out, "does not support authentication") {
		t.Errorf("msmtp without TLS: %v\n%s\nwant a refusal about authentication", err, out)
	}
	if d := queueDepth(t, e); d != 1 {
		t.Errorf("queue depth %d, want still 1", d)
	}
}

// TestIntegrationMsmtpImplicitTLS: msmtp on the implicit-TLS listener
// (relay.listen_tls, RFC 8314), from a remote address: the connection
// is encrypted from the first byte, so AUTH is offered at once; the
// right password gets the mail delivered to the smarthost, a wrong one
// 535 and nothing sent.
func TestIntegrationMsmtpImplicitTLS(t *testing.T) {
	msmtp := optionalBinary(t, "msmtp", "msmtp")
	e, host, _, caFile := tlsAuthRelay(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	served := make(chan error, 1)
	go func() { served <- e.server.ServeTLS(fromAddr("192.0.2.50")(l)) }()
	t.Cleanup(func() { l.Close() })
	sink, err := fakesmtp.NewMX(fakesmtp.MXOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	relay := NewRelay(e.q, noAccounts{}, RelayOptions{Hostname: "relay.acme.test", Timeouts: testTimeouts,
		Direct: DirectOptions{Smarthost: sink.Addr(), SmarthostTLS: tlsmode.Plain}})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); relay.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-stopped })

	if out, err := msmtpSend(msmtp, msmtpConfig(t, host, port, caFile, "s3cret", "implicit")); err != nil {
		t.Fatalf("msmtp over implicit TLS with the right password: %v\n%s", err, out)
	}
	got := sink.WaitFor(1, 30*time.Second)
	if len(got) != 1 {
		t.Fatalf("smarthost got %d messages within 30s, want msmtp's", len(got))
	}
	// S: the session was encrypted although it never said STARTTLS.
	want := "[192.0.2.50]) (authenticated user helpdesk) by relay.test (mailgate) with ESMTPSA id"
	if f := receivedFields(got[0].Data); len(f) == 0 || !strings.Contains(f[0], want) || !bytes.Contains(got[0].Data, []byte("Subject: msmtp")) {
		t.Errorf("delivered %q, Received fields %q: want msmtp's mail with ours on top containing %q", got[0].Data, f, want)
	}
	if out, err := msmtpSend(msmtp, msmtpConfig(t, host, port, caFile, "wrong", "implicit")); err == nil || !strings.Contains(out, "535 5.7.8") {
		t.Errorf("msmtp over implicit TLS with a wrong password: %v\n%s\nwant a failure naming 535", err, out)
	}
	if d := queueDepth(t, e); d != 0 {
		t.Errorf("queue depth %d after the wrong password, want 0", d)
	}
	if n := len(sink.Received()); n != 1 {
		t.Errorf("smarthost has %d messages, want still 1", n)
	}
	select {
	case err := <-served:
		t.Errorf("ServeTLS returned early: %v", err)
	default:
	}
}
