package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/tickets"
)

// mailgate runs the CLI in-process and returns its exit code and output.
func mailgate(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(append([]string{"mailgate"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// wantOutput fails t for each of wants that out, the output of what,
// lacks.
func wantOutput(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("%s lacks %q:\n%s", what, want, out)
		}
	}
}

func TestVersionAndHelp(t *testing.T) {
	code, out, _ := mailgate(t, "version")
	if code != 0 || !strings.HasPrefix(out, "mailgate ") {
		t.Errorf("version = %d %q", code, out)
	}
	code, out, _ = mailgate(t, "--help")
	for _, cmd := range []string{"config", "tickets", "version"} {
		if code != 0 || !strings.Contains(out, cmd) {
			t.Errorf("--help does not list %q: %s", cmd, out)
		}
	}
}

func TestConfigErrorsExit2NamingTheKey(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("relay:\n  listen: nowhere\n"), 0o600)
	code, _, stderr := mailgate(t, "--config", bad, "config", "check")
	if code != 2 || !strings.Contains(stderr, "relay.listen") {
		t.Errorf("config check of a bad file = exit %d, stderr %q; want 2 naming relay.listen", code, stderr)
	}
	code, _, stderr = mailgate(t, "--set", "fetch.poll_interval=soon", "config", "check")
	if code != 2 || !strings.Contains(stderr, "fetch.poll_interval") {
		t.Errorf("--set bad duration = exit %d, %q", code, stderr)
	}
	t.Setenv("MAILGATE_GOOGLE_CLIENT_SECRET", "s3cret")
	code, out, _ := mailgate(t, "config", "check")
	if code != 0 || strings.Contains(out, "s3cret") || !strings.Contains(out, "client_secret") {
		t.Errorf("config check = %d, secret must be masked:\n%s", code, out)
	}
}

func TestRedisDownIsAClearError(t *testing.T) {
	code, _, stderr := mailgate(t, "--redis-url", "redis://127.0.0.1:1/0", "tickets", "list")
	if code == 0 || !strings.Contains(stderr, "does not answer") {
		t.Errorf("tickets list without Redis = %d, %q", code, stderr)
	}
}

// TestIngestFolderTwice is the admin's check: a folder of real-world mails
// becomes tickets and threads, and a second run creates nothing.
func TestIngestFolderTwice(t *testing.T) {
	srv := redistest.Start(t)
	dir := filepath.Join("..", "..", "mailparse", "testdata", "mail")
	code, out, stderr := mailgate(t, "--redis-url", srv.URL, "tickets", "ingest", dir)
	if code != 0 {
		t.Fatalf("ingest = %d\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(out, "threaded by in-reply-to") || !strings.Contains(out, "threaded by references") {
		t.Errorf("the two replies in the corpus did not thread:\n%s", out)
	}
	if stderr != "" {
		t.Errorf("ingest printed to stderr: %s", stderr)
	}
	code, out, _ = mailgate(t, "--redis-url", srv.URL, "tickets", "ingest", dir)
	if code != 0 || !strings.Contains(out, "\n0 new tickets, 0 comments,") {
		t.Errorf("second ingest created something:\n%s", out)
	}

	code, out, _ = mailgate(t, "--redis-url", srv.URL, "tickets", "list", "--json")
	var list []tickets.Ticket
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) == 0 {
		t.Fatalf("tickets list --json = %d %q", code, out)
	}
	code, out, _ = mailgate(t, "--redis-url", srv.URL, "tickets", "list")
	if code != 0 || !strings.Contains(out, "Problème de facturation") {
		t.Errorf("tickets list does not show the French subject:\n%s", out)
	}
	code, out, _ = mailgate(t, "--redis-url", srv.URL, "tickets", "show", "#1", "--json")
	var one tickets.Ticket
	if code != 0 || json.Unmarshal([]byte(out), &one) != nil || one.ID != 1 || len(one.Comments) == 0 {
		t.Errorf("tickets show #1 --json = %d %q", code, out)
	}
	code, _, stderr = mailgate(t, "--redis-url", srv.URL, "tickets", "show", "999")
	if code == 0 || !strings.Contains(stderr, "no such ticket") {
		t.Errorf("show of a missing ticket = %d %q", code, stderr)
	}
}

// TestIngestIsNotRateLimited: a folder of one customer's mails becomes
// tickets even over fetch.sender_rate_limit; --sender-rate-limit applies it,
// and the refused mails say how to take them all.
func TestIngestIsNotRateLimited(t *testing.T) {
	srv := redistest.Start(t)
	dir := t.TempDir()
	for i := range 5 {
		eml := fmt.Sprintf("From: Ann Customer <ann@customer.example>\r\nTo: support@example.com\r\n"+
			"Subject: question %d\r\nMessage-ID: <q%d@customer.example>\r\nDate: Mon, 2 Nov 2026 10:0%d:00 +0000\r\n\r\nhello %d\r\n", i, i, i, i)
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.eml", i)), []byte(eml), 0o600)
	}
	code, out, stderr := mailgate(t, "tickets", "ingest", dir, "--redis-url", srv.URL, "--set", "fetch.sender_rate_limit=2")
	if code != 0 || !strings.Contains(out, "\n5 new tickets,") || strings.Contains(out, "rate-limited") {
		t.Errorf("ingest of 5 mails from one sender, limit 2 = %d:\n%s\n%s", code, out, stderr)
	}

	other := t.TempDir()
	for i := range 5 {
		eml := fmt.Sprintf("From: Bob <bob@customer.example>\r\nTo: support@example.com\r\n"+
			"Subject: again %d\r\nMessage-ID: <b%d@customer.example>\r\n\r\nhi\r\n", i, i)
		os.WriteFile(filepath.Join(other, fmt.Sprintf("%d.eml", i)), []byte(eml), 0o600)
	}
	code, out, _ = mailgate(t, "tickets", "ingest", "--sender-rate-limit", other, "--redis-url", srv.URL, "--set", "fetch.sender_rate_limit=2")
	if code != 0 || !strings.Contains(out, "\n2 new tickets,") || !strings.Contains(out, "rate-limited") ||
		!strings.Contains(out, "without --sender-rate-limit") {
		t.Errorf("ingest --sender-rate-limit of 5 mails, limit 2 = %d:\n%s", code, out)
	}
}
