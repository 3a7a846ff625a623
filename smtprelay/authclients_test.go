package smtprelay

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testcert"
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

func TestIntegrationMsmtpAuth(t *testing.T) {
	msmtp := optionalBinary(t, "msmtp", "msmtp")
	e, host, port, caFile := tlsAuthRelay(t)
	dir := t.TempDir()
	conf := func(password string, starttls bool) string {
		p := filepath.Join(dir, fmt.Sprintf("msmtprc-%s-%v", password, starttls))
		tls := "on"
		if !starttls {
			tls = "off"
		}
		text := fmt.Sprintf("defaults\nlogfile -\n\naccount relay\nhost %s\nport %s\ndomain helpdesk.example\nfrom support@acme.test\n"+
			"tls %s\ntls_starttls on\ntls_trust_file %s\nauth plain\nuser helpdesk\npassword %s\n\naccount default : relay\n",
			host, port, tls, caFile, password)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil { // msmtp refuses a config others can read
			t.Fatal(err)
		}
		return p
	}
	send := func(rc string) (string, error) {
		cmd := exec.Command(msmtp, "-C", rc, "--read-envelope-from", "-t")
		cmd.Stdin = strings.NewReader("From: support@acme.test\nTo: alice@customer.test\nSubject: msmtp\n\nhello\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := send(conf("s3cret", true)); err != nil {
		t.Fatalf("msmtp over STARTTLS with the right password: %v\n%s", err, out)
	}
	if d := queueDepth(t, e); d != 1 {
		t.Errorf("queue depth %d after msmtp's mail, want 1", d)
	}
	if out, err := send(conf("wrong", true)); err == nil || !strings.Contains(out, "535 5.7.8") {
		t.Errorf("msmtp with a wrong password: %v\n%s\nwant a failure naming 535", err, out)
	}
	// Without TLS msmtp finds no AUTH to use and sends no password.
	if out, err := send(conf("s3cret", false)); err == nil || !strings.Contains(out, "does not support authentication") {
		t.Errorf("msmtp without TLS: %v\n%s\nwant a refusal about authentication", err, out)
	}
	if d := queueDepth(t, e); d != 1 {
		t.Errorf("queue depth %d, want still 1", d)
	}
}
