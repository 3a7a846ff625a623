package smtprelay

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/tlsmode"
)

// TestIntegrationSwaksToSmtpSink runs the relay between two pieces of
// real mail software: swaks submits as a helpdesk would, and Postfix's
// smtp-sink is the smarthost that receives what the relay delivers. It
// catches what in-process fakes built on the same SMTP library cannot:
// another implementation's idea of the protocol.
func TestIntegrationSwaksToSmtpSink(t *testing.T) {
	if os.Getenv("MG_INTEGRATION") != "1" {
		t.Skip("set MG_INTEGRATION=1 (scripts/test does) to run against swaks and Postfix's smtp-sink")
	}
	swaks := needBinary(t, "swaks", "swaks")
	sink := startSmtpSink(t)

	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	e := startRelay(t, ServerOptions{
		AllowedNetworks:  loopback,
		SupportAddresses: func(context.Context) ([]string, error) { return []string{"support@acme.example"}, nil },
		MaxMessageBytes:  1 << 20,
		Logger:           logger,
	})
	key, err := dkim.Generate(dkim.AlgoEd25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	dkimKey := dkim.Key{Domain: "acme.example", Selector: "mg", Signer: key}
	signer, err := dkim.NewSigner([]dkim.Key{dkimKey})
	if err != nil {
		t.Fatal(err)
	}
	relay := NewRelay(e.q, noAccounts{}, RelayOptions{
		Hostname: "relay.acme.example",
		Direct:   DirectOptions{Smarthost: sink.addr, SmarthostTLS: tlsmode.Plain},
		Signer:   signer,
		Timeouts: testTimeouts,
		Logger:   logger,
	})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		relay.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-stopped })

	// swaks's defaults (its own Date, Message-Id, X-Mailer) plus ours.
	base := []string{"--server", e.addr, "--helo", "helpdesk.acme.example", "--timeout", "10s", "--to", "customer@example.org"}

	t.Run("ticket notification", func(t *testing.T) {
		out, code := runSwaks(t, swaks, append(base, "--from", "support@acme.example",
			"--header", "Subject: [#12] hello", "--add-header", "X-Mailgate-Ticket: 12",
			"--body", "We are looking into it.")...)
		if code != 0 {
			t.Fatalf("swaks exited %d, want 0:\n%s", code, out)
		}
		if !strings.Contains(out, " -> X-Mailgate-Ticket: 12") {
			t.Fatalf("swaks did not send the %s header:\n%s", TicketHeader, out)
		}
		m := delivered(t, e.q, out)
		if m.Ticket != 12 || m.Route != RouteSmarthost {
			t.Errorf("queue record %+v, want ticket 12 sent via the smarthost", m)
		}
		got := sink.message(t, m.MessageID)
		for _, want := range []string{"X-Mail-Args: <support@acme.example>", "X-Rcpt-Args: <customer@example.org>", "Subject: [#12] hello", "We are looking into it."} {
			if !strings.Contains(got, want) {
				t.Errorf("smtp-sink received no %q:\n%s", want, got)
			}
		}
		if strings.Contains(got, TicketHeader) {
			t.Errorf("smtp-sink received the internal %s header:\n%s", TicketHeader, got)
		}
	})

	t.Run("sender not a support address", func(t *testing.T) {
		out, code := runSwaks(t, swaks, append(base, "--from", "spammer@evil.example", "--header", "Subject: buy now")...)
		// swaks exit code 23: "error in MAIL transaction".
		if code != 23 || !strings.Contains(out, "550 5.7.1") {
			t.Errorf("swaks exited %d, want 23 after a 550 5.7.1 to MAIL FROM:\n%s", code, out)
		}
	})

	// Another client's idea of quoting: swaks sends these addresses as
	// given, and each is refused where it is given, not retried for days.
	t.Run("envelope no route can deliver", func(t *testing.T) {
		out, code := runSwaks(t, swaks, append(base, "--from", `"john doe"@acme.example`, "--header", "Subject: x")...)
		if code != 23 || !strings.Contains(out, `553 5.1.7 Sender address <john doe@acme.example> refused: the local part "john doe" needs quoting`) {
			t.Errorf("swaks exited %d, want 23 after a 553 5.1.7 naming the quoted local part:\n%s", code, out)
		}
		for to, status := range map[string]string{`"bob smith"@example.org`: "5.1.3", "bob@[192.0.2.1]": "5.1.3", "bob@exa_mple.org": "5.1.3",
			"böb@example.org": "5.6.7"} { // UTF-8, and swaks does not say SMTPUTF8 (RFC 6531)
			out, code := runSwaks(t, swaks, "--server", e.addr, "--helo", "helpdesk.acme.example", "--timeout", "10s",
				"--from", "support@acme.example", "--to", to, "--header", "Subject: x")
			// swaks exit code 24: "no RCPTs accepted".
			if code != 24 || !strings.Contains(out, "553 "+status+" Recipient address <") {
				t.Errorf("RCPT TO:<%s>: swaks exited %d, want 24 after a 553 %s:\n%s", to, code, status, out)
			}
		}
		if n, _, _ := e.q.Stats(context.Background()); n != 0 {
			t.Errorf("queue depth %d after refused envelopes, want nothing queued", n)
		}
	})

	t.Run("PDF attachment", func(t *testing.T) {
		pdf := []byte("%PDF-1.4\n% mailgate integration test\n%%EOF\n")
		path := filepath.Join(t.TempDir(), "invoice.pdf")
		if err := os.WriteFile(path, pdf, 0o600); err != nil {
			t.Fatal(err)
		}
		out, code := runSwaks(t, swaks, append(base, "--from", "support@acme.example",
			"--header", "Subject: [#13] Your invoice", "--body", "Attached.",
			"--attach-type", "application/pdf", "--attach", "@"+path)...)
		if code != 0 {
			t.Fatalf("swaks exited %d, want 0:\n%s", code, out)
		}
		m := delivered(t, e.q, out)
		if m.Route != RouteSmarthost {
			t.Errorf("queue record %+v, want sent via the smarthost", m)
		}
		got := sink.message(t, m.MessageID)
		for _, want := range []string{"Content-Type: application/pdf", "invoice.pdf", base64.StdEncoding.EncodeToString(pdf)} {
			if !strings.Contains(got, want) {
				t.Errorf("smtp-sink received no %q:\n%s", want, got)
			}
		}
		// The signature must survive the trip through a foreign SMTP
		// implementation (dot-stuffing, line endings). smtp-sink stores
		// LF lines and prepends its own unsigned X- headers.
		t.Logf("smtp-sink received:\n%s", got)
		raw := strings.ReplaceAll(got, "\n", "\r\n")
		verifs, err := msgdkim.VerifyWithOptions(strings.NewReader(raw), &msgdkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) {
				if strings.TrimSuffix(name, ".") == dkimKey.RecordName() {
					return []string{dkimKey.RecordValue()}, nil
				}
				return nil, &net.DNSError{Err: "no such record", Name: name, IsNotFound: true}
			},
		})
		if err != nil || len(verifs) != 1 || verifs[0].Err != nil {
			t.Errorf("DKIM verification of what smtp-sink received = %+v, %v; want one valid signature", verifs, err)
		}
	})
}

// noAccounts is an account store without connected Gmail accounts, so
// that everything goes direct (or to the smarthost).
type noAccounts struct{}

func (noAccounts) Get(_ context.Context, email string) (*accounts.Account, error) {
	return nil, fmt.Errorf("account %s: %w", email, accounts.ErrNotFound)
}

func (noAccounts) AliasOwner(context.Context, string) (string, error) { return "", nil }

// needBinary finds a program the integration tests run, failing (not
// skipping: CI installs them) with the Debian package to install.
func needBinary(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	// smtp-sink lives in /usr/sbin, which a non-root PATH often lacks.
	if p := filepath.Join("/usr/sbin", name); fileExists(p) {
		return p
	}
	t.Fatalf("%s is not installed: MG_INTEGRATION=1 needs it (apt-get install -y %s)", name, pkg)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// runSwaks runs swaks and returns its transcript and exit code.
func runSwaks(t *testing.T, swaks string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(swaks, args...).CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	if err != nil {
		t.Fatalf("running swaks: %v", err)
	}
	return string(out), 0
}

var queuedAs = regexp.MustCompile(`250 2\.0\.0 OK: queued as (\S+)`)

// delivered reads the queue id from a swaks transcript and waits until the
// relay has delivered that message.
func delivered(t *testing.T, q *Queue, transcript string) *Message {
	t.Helper()
	id := queuedAs.FindStringSubmatch(transcript)
	if id == nil {
		t.Fatalf("swaks transcript has no %q:\n%s", "250 2.0.0 OK: queued as <id>", transcript)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := q.Get(context.Background(), id[1], false)
		if err != nil {
			t.Fatalf("queue %s: %v", id[1], err)
		}
		switch {
		case m.State == StateSent:
			return m
		case m.State == StateBounced || time.Now().After(deadline):
			t.Fatalf("queue %s: %+v, want sent to smtp-sink within 10s", id[1], m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// smtpSink is a running Postfix smtp-sink that dumps each message it
// receives into its own file in dir.
type smtpSink struct {
	addr string
	dir  string
}

func startSmtpSink(t *testing.T) *smtpSink {
	t.Helper()
	bin := needBinary(t, "smtp-sink", "postfix")
	dir := t.TempDir()
	logPath := filepath.Join(dir, "smtp-sink.log")
	dumps := filepath.Join(dir, "dump")
	var lastErr error
	// Pick a free port by binding :0 and releasing it; another process may
	// take it in between, so try a few.
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		// -d: one file per message, named <template><random hex>.
		args := []string{"-d", dumps + "/msg.", "-h", "sink.example.org"}
		if os.Geteuid() == 0 {
			// smtp-sink refuses to run as root without a user to switch
			// to; stay root so it can write to our temporary directory.
			u, err := user.Current()
			if err != nil {
				t.Fatal(err)
			}
			args = append(args, "-u", u.Username)
		}
		args = append(args, addr, "100")
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting smtp-sink: %v", err)
		}
		logf.Close()
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		if err = waitGreeting(addr, exited); err == nil {
			t.Cleanup(func() { cmd.Process.Kill(); <-exited })
			return &smtpSink{addr: addr, dir: dumps}
		}
		cmd.Process.Kill()
		<-exited
		log, _ := os.ReadFile(logPath)
		lastErr = fmt.Errorf("%v; smtp-sink said: %s", err, bytes.TrimSpace(log))
	}
	t.Fatalf("smtp-sink did not start: %v", lastErr)
	return nil
}

// waitGreeting waits until an SMTP server on addr sends its 220 greeting.
func waitGreeting(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 4)
			_, err = c.Read(buf)
			c.Close()
			if err == nil && string(buf[:3]) == "220" {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("smtp-sink exited")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return errors.New("no 220 greeting within 5s")
}

// message returns the dump of the message with that Message-ID.
func (s *smtpSink) message(t *testing.T, messageID string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(s.dir, "msg.*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err == nil && bytes.Contains(b, []byte("<"+messageID+">")) {
				return string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtp-sink has no message with Message-ID <%s> among %d in %s", messageID, len(files), s.dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
