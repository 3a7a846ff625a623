package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/tickets"
)

// tokenMails writes a customer's mail and a stranger's "Re: [#1]" to a
// folder, in that order.
func tokenMails(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, eml := range map[string]string{
		"1.eml": "From: Ann Customer <ann@customer.example>\r\nTo: support@example.com\r\nSubject: Invoice wrong\r\n" +
			"Message-ID: <ann1@customer.example>\r\n\r\nPlease fix it.\r\n",
		"2.eml": "From: Mallory <mallory@elsewhere.example>\r\nTo: support@example.com\r\nSubject: Re: [#1] Invoice wrong\r\n" +
			"Message-ID: <m1@elsewhere.example>\r\n\r\nPay here instead.\r\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(eml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestStrangerTokenOpensRelatedTicket: what an admin sees of a stranger's
// "[#1]": a new ticket, named related to #1 by ingest and tickets show.
func TestStrangerTokenOpensRelatedTicket(t *testing.T) {
	srv := redistest.Start(t)
	code, out, stderr := mailgate(t, "--redis-url", srv.URL, "tickets", "ingest", tokenMails(t))
	if code != 0 {
		t.Fatalf("ingest = %d\n%s\n%s", code, out, stderr)
	}
	wantOutput(t, "ingest", out, "2.eml: new ticket #2, related to #1 ("+tickets.RelatedSubjectTokenStranger+")", "\n2 new tickets, 0 comments,")
	code, out, _ = mailgate(t, "--redis-url", srv.URL, "tickets", "show", "2")
	if code != 0 {
		t.Fatalf("tickets show 2 = %d", code)
	}
	wantOutput(t, "tickets show 2", out, "related:    #1 ("+tickets.RelatedSubjectTokenStranger+")", "Pay here instead.")
	code, out, _ = mailgate(t, "--redis-url", srv.URL, "tickets", "show", "2", "--json")
	var tk map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &tk) != nil || tk["related_ticket"] != float64(1) || tk["related_reason"] != tickets.RelatedSubjectTokenStranger {
		t.Errorf("tickets show 2 --json = %d %s, want related_ticket 1 and its reason", code, out)
	}
	if _, out, _ = mailgate(t, "--redis-url", srv.URL, "tickets", "show", "1"); strings.Contains(out, "Pay here instead.") || strings.Contains(out, "related:") {
		t.Errorf("ticket #1 shows the stranger's mail or a related ticket:\n%s", out)
	}
}

// TestTokenThreadingAnyoneReachesStore: tickets.token_threading: anyone,
// wired through to the store, lets the stranger's token join #1 again.
func TestTokenThreadingAnyoneReachesStore(t *testing.T) {
	srv := redistest.Start(t)
	code, out, stderr := mailgate(t, "--redis-url", srv.URL, "--set", "tickets.token_threading=anyone", "tickets", "ingest", tokenMails(t))
	if code != 0 {
		t.Fatalf("ingest = %d\n%s\n%s", code, out, stderr)
	}
	wantOutput(t, "ingest with token_threading anyone", out, "2.eml: comment 2 on ticket #1 (threaded by subject-token)", "\n1 new tickets, 1 comments,")
}

// TestTokenThreadingConfig: a bad value names the key and exits 2; a
// chosen one is listed by config check --changed.
func TestTokenThreadingConfig(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	code, _, stderr := mailgate(t, "config", "check", "--set", "tickets.token_threading=everyone")
	if code != exitConfig || !strings.Contains(stderr, "tickets.token_threading: must be one of participants, anyone") {
		t.Errorf("config check with token_threading=everyone = %d %q, want %d naming the key", code, stderr, exitConfig)
	}
	code, out, stderr := mailgate(t, "config", "check", "--changed", "--set", "tickets.token_threading=anyone")
	if code != 0 || !strings.Contains(out, "tickets.token_threading: anyone\n") {
		t.Errorf("config check --changed = %d\n%s\n%s", code, out, stderr)
	}
}
