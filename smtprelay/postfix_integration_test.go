package smtprelay

import (
	"bytes"
	"context"
	"mime"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/testcert"
	"github.com/mailgate/mailgate/tlsmode"
)

// TestIntegrationPostfixNullClient: a Postfix null client (relayhost =
// the relay) submits through its sendmail a message with a raw UTF-8
// subject and body, which Postfix sends with SMTPUTF8
// (smtputf8_autodetect_classes = sendmail), and one with an attachment.
// The relay takes both and delivers them to a smarthost that offers
// SMTPUTF8 (the UTF-8 subject intact) and to one that does not (the
// subject as an encoded-word), signed, the signature verifying.
func TestIntegrationPostfixNullClient(t *testing.T) {
	requirePostfix(t)
	for _, utf8 := range []bool{true, false} {
		t.Run("smarthost SMTPUTF8="+strconv.FormatBool(utf8), func(t *testing.T) {
			postfixNullClient(t, utf8, false)
		})
	}
}

// TestIntegrationPostfixNullClientSASLTLS: the same null client set up
// as on a helpdesk's own host: it must encrypt (smtp_tls_security_level
// = encrypt) and logs in with SASL from a password map. The relay sees
// it at a remote address, where only the login lets it relay and AUTH
// is offered only after STARTTLS; its Received field says ESMTPSA and
// names the user.
func TestIntegrationPostfixNullClientSASLTLS(t *testing.T) {
	requirePostfix(t)
	for _, utf8 := range []bool{true, false} {
		t.Run("smarthost SMTPUTF8="+strconv.FormatBool(utf8), func(t *testing.T) {
			postfixNullClient(t, utf8, true)
		})
	}
}

func requirePostfix(t *testing.T) {
	t.Helper()
	if os.Getenv("MG_INTEGRATION") != "1" {
		t.Skip("set MG_INTEGRATION=1 (scripts/test does) to run a Postfix null client")
	}
	if _, err := os.Stat("/usr/sbin/postfix"); err != nil || os.Geteuid() != 0 {
		t.Skip("a private Postfix instance needs /usr/sbin/postfix and root")
	}
}

// postfixLogin is what a null client logs in to the relay with.
type postfixLogin struct{ user, password string }

// postfixNullClient sends the two messages through a Postfix null client
// to a relay that delivers to a smarthost with or without SMTPUTF8. With
// secure, the client appears at 192.0.2.50, and the relay takes its mail
// only after STARTTLS and AUTH as helpdesk.
func postfixNullClient(t *testing.T, utf8, secure bool) {
	sink, err := fakesmtp.NewMX(fakesmtp.MXOptions{SMTPUTF8: utf8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	key, _ := dkim.Generate(dkim.AlgoEd25519, 0)
	dkimKey := dkim.Key{Domain: "acme.example", Selector: "mg", Signer: key}
	signer, _ := dkim.NewSigner([]dkim.Key{dkimKey})
	opts := ServerOptions{AllowedNetworks: loopback, MaxMessageBytes: 1 << 20,
		SupportAddresses: func(context.Context) ([]string, error) { return []string{"support@acme.example"}, nil }}
	var wrap func(net.Listener) net.Listener
	var login *postfixLogin
	if secure {
		ca, err := testcert.New()
		if err != nil {
			t.Fatal(err)
		}
		opts.AllowedNetworks, opts.Users, opts.TLS = nil, relayUsers(t), ca.ServerTLS("localhost")
		wrap = fromAddr("192.0.2.50")
		login = &postfixLogin{user: "helpdesk", password: "s3cret"}
	}
	e := startRelayOn(t, opts, wrap)
	relay := NewRelay(e.q, noAccounts{}, RelayOptions{Hostname: "relay.acme.example", Signer: signer, Timeouts: testTimeouts,
		Direct: DirectOptions{Smarthost: sink.Addr(), SmarthostTLS: tlsmode.Plain}})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); relay.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-stopped })

	sendmail := startPostfix(t, e.addr, login)
	subject := "Ihre Anfrage [#77]: Grüße aus Köln — ✓"
	sendmail("From: Jörg Support <support@acme.example>\nTo: customer@example.org\nSubject: " + subject +
		"\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nDanke schön, wir kümmern uns.\n")
	sendmail("From: support@acme.example\nTo: customer@example.org\nSubject: invoice\nMIME-Version: 1.0\n" +
		"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nAttached.\n--b\n" +
		"Content-Type: application/pdf\nContent-Disposition: attachment; filename=invoice.pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--b--\n")
	got := sink.WaitFor(2, 60*time.Second)
	if len(got) != 2 {
		t.Fatalf("smarthost got %d messages within 60s, want 2", len(got))
	}
	for _, m := range got {
		verifs, err := msgdkim.VerifyWithOptions(bytes.NewReader(m.Data), &msgdkim.VerifyOptions{LookupTXT: func(string) ([]string, error) {
			return []string{dkimKey.RecordValue()}, nil
		}})
		if err != nil || len(verifs) != 1 || verifs[0].Err != nil {
			t.Errorf("DKIM of %q: %+v, %v", m.Data, verifs, err)
		}
		// Postfix says SMTPUTF8 for the UTF-8 subject only: the
		// relay's Received field tells which way it came.
		with := "ESMTP"
		if bytes.Contains(m.Data, []byte("Danke")) {
			with = "UTF8SMTP"
		}
		from := "[127.0.0.1]) by"
		if secure {
			// S for TLS, A for AUTH (RFC 3848).
			with += "SA"
			from = "[192.0.2.50]) (authenticated user helpdesk) by"
		}
		if f := receivedFields(m.Data); len(f) == 0 || !strings.Contains(f[0], from+" relay.test (mailgate) with "+with+" id") {
			t.Errorf("Received fields %q, want the relay's on top, %q with %s", f, from, with)
		}
	}
	var text, pdf []byte
	for _, m := range got {
		if bytes.Contains(m.Data, []byte("invoice.pdf")) {
			pdf = m.Data
		} else {
			text = m.Data
		}
	}
	if pdf == nil || !bytes.Contains(pdf, []byte("JVBERi0xLjQK")) {
		t.Errorf("attachment lost:\n%s", pdf)
	}
	if !bytes.Contains(text, []byte("Danke schön, wir kümmern uns.")) {
		t.Errorf("UTF-8 body not intact:\n%s", text)
	}
	subj := regexpField(string(text), "Subject")
	if utf8 && subj != subject {
		t.Errorf("Subject %q, want it in UTF-8 as sent: %q", subj, subject)
	}
	if dec, err := new(mime.WordDecoder).DecodeHeader(subj); !utf8 && (err != nil || dec != subject || !isASCII(subj)) {
		t.Errorf("Subject %q (decoded %q, %v), want an ASCII encoded-word of %q", subj, dec, err, subject)
	}
}

// startPostfix runs a private Postfix null client whose relayhost is
// relayAddr and returns a function that submits a message (LF lines)
// through its sendmail. With a login it requires TLS and logs in with
// SASL (Cyrus, whose PLAIN and LOGIN come in libsasl2-modules).
func startPostfix(t *testing.T, relayAddr string, login *postfixLogin) func(msg string) {
	t.Helper()
	dir := t.TempDir()
	// Postfix daemons run as the postfix user: let it reach the spool.
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	for _, d := range []string{"spool", "data"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	exec.Command("chown", "postfix", filepath.Join(dir, "data")).Run()
	master, _ := os.ReadFile("/etc/postfix/master.cf")
	os.WriteFile(filepath.Join(dir, "master.cf"), master, 0o644)
	host, port, _ := net.SplitHostPort(relayAddr)
	main := strings.Join([]string{
		"compatibility_level = 3.6",
		"queue_directory = " + filepath.Join(dir, "spool"),
		"data_directory = " + filepath.Join(dir, "data"),
		"mail_owner = postfix", "setgid_group = postdrop",
		"myhostname = helpdesk.acme.example", "mydomain = acme.example", "myorigin = $mydomain",
		"inet_interfaces = loopback-only", "inet_protocols = ipv4", "mydestination =",
		"master_service_disable = inet", "alias_maps =", "alias_database =",
		"relayhost = [" + host + "]:" + port,
		"smtputf8_enable = yes", "smtputf8_autodetect_classes = sendmail, verify",
		"maillog_file = " + filepath.Join(dir, "maillog"), "maillog_file_prefixes = " + dir,
	}, "\n")
	if login != nil {
		// texthash: needs no postmap and no Berkeley DB. The relay's
		// certificate is from a test CA: encrypt does not verify it.
		passwd := filepath.Join(dir, "sasl_passwd")
		os.WriteFile(passwd, []byte("["+host+"]:"+port+" "+login.user+":"+login.password+"\n"), 0o600)
		main += "\n" + strings.Join([]string{
			"smtp_sasl_auth_enable = yes",
			"smtp_sasl_password_maps = texthash:" + passwd,
			"smtp_sasl_security_options = noanonymous",
			"smtp_sasl_tls_security_options = noanonymous",
			"smtp_tls_security_level = encrypt",
		}, "\n")
	}
	main += "\n"
	os.WriteFile(filepath.Join(dir, "main.cf"), []byte(main), 0o644)
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			t.Fatalf("%s %q: %v\n%s\n%s", name, args, err, out, log)
		}
	}
	run("postconf", "-c", dir, "-F", "*/*/chroot = n")
	run("postfix", "-c", dir, "start")
	t.Cleanup(func() {
		exec.Command("postfix", "-c", dir, "stop").Run()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			t.Logf("Postfix log:\n%s", log)
		}
	})
	return func(msg string) {
		t.Helper()
		cmd := exec.Command("sendmail", "-C", dir, "-f", "support@acme.example", "-t")
		cmd.Stdin = strings.NewReader(msg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sendmail: %v\n%s", err, out)
		}
	}
}
