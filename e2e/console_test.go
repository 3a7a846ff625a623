package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

const chromium = "/usr/bin/chromium"

// runChromium runs headless Chromium (Debian's chromium package) with
// args, without the network chatter and first-run screens of a desktop
// browser, and returns its standard output.
func runChromium(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, chromium, append(base, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// TestConsoleInChromium opens the web console of a running `mailgate
// serve` in a real browser, as an admin does: two accounts, one of them
// past its quota warning, and a message the recipient's server keeps
// deferring. It reads the page Chromium built and saves a screenshot
// under $MG_ARTEFACTS (scripts/test sets it) or the test's artifact
// directory (go test -artifacts).
func TestConsoleInChromium(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil && binary != "" {
		t.Skip("no " + chromium + ": apt-get install -y chromium (scripts/test does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const token = "console-token-0123456789abcdef"
	w := newWorld(t, ctx, Config{PollInterval: 2 * time.Second, LeaseTTL: 30 * time.Second, ShutdownGrace: 5 * time.Second,
		HTTPToken: token, GmailLimit: 10})
	const sales = "sales@" + DKIMDomain
	w.addAccount(account)
	w.addAccount(sales)
	serve := w.serve()
	w.waitPolled(account, serve.Started, 10*time.Second)
	w.waitPolled(sales, serve.Started, 10*time.Second)

	// Nine of the ten messages Gmail allows today, from the support
	// address: past the 90% warning.
	for i := range 9 {
		to := fmt.Sprintf("customer%d@customer.example", i)
		if _, _, err := submit(w.relay, account, to, notification(to, "Your ticket", fmt.Sprintf("n%d@e2e.test", i), 1, false, "")); err != nil {
			t.Fatal(err)
		}
	}
	w.eventually(20*time.Second, "nine messages at Gmail", func() bool { return len(w.fakes.GmailSMTP.Received()) >= 9 })

	// One message from sales that Gmail keeps deferring.
	const later = "later@customer.example"
	w.fakes.GmailSMTP.FailRcpt(later, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "mailbox busy, try later"})
	msg := strings.Replace(string(notification(later, "Quote", "late@e2e.test", 2, false, "")), account, sales, 1)
	qid, _, err := submit(w.relay, sales, later, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	w.eventually(20*time.Second, "the deferred message", func() bool {
		return strings.Contains(w.mailgate("queue", "list"), "mailbox busy")
	})

	url := "http://" + w.http + "/?token=" + token
	dom := runChromium(t, "--dump-dom", url)
	for _, want := range []string{
		"mailgate console", "Redis",
		account, sales, "connected",
		"9 / 10 sent", "over the warning threshold", "Close to Gmail's daily limit",
		qid, "mailbox busy, try later",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("Chromium's page lacks %q:\n%s", want, dom)
		}
	}
	if !strings.Contains(dom, "<meter") {
		t.Errorf("Chromium's page has no quota bar:\n%s", dom)
	}
	// Without the token, the browser gets no console.
	if bare := runChromium(t, "--dump-dom", "http://"+w.http+"/"); strings.Contains(bare, account) {
		t.Errorf("the console showed accounts without the token:\n%s", bare)
	}

	dir := os.Getenv("MG_ARTEFACTS")
	if dir == "" {
		dir = t.ArtifactDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "console.png")
	runChromium(t, "--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars", url)
	b, err := os.ReadFile(shot)
	if err != nil || len(b) < 8 || string(b[1:4]) != "PNG" {
		t.Fatalf("no PNG screenshot at %s: %v", shot, err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(b))
}
