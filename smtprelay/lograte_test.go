package smtprelay

import (
	"fmt"
	"strings"
	"testing"
)

// TestRefusedSenderIsLogged: an admin asking "why didn't my mail go out"
// finds one line naming the client, its AUTH user, the command and the
// reply.
func TestRefusedSenderIsLogged(t *testing.T) {
	log, buf := testLogger()
	e := startRelay(t, ServerOptions{Users: relayUsers(t), Logger: log})
	c := dialRaw(t, e.addr)
	c.cmd("EHLO helpdesk.test")
	if got := c.cmd("AUTH PLAIN " + plainIR("helpdesk", "s3cret")); !strings.HasPrefix(got, "235") {
		t.Fatalf("AUTH: %q", got)
	}
	if got := c.cmd("MAIL FROM:<ceo@other-bank.example>"); !strings.HasPrefix(got, "550 5.7.1") {
		t.Fatalf("foreign sender: %q, want 550 5.7.1", got)
	}
	lines := buf.lines("relay: refused")
	if len(lines) != 1 {
		t.Fatalf("%d refusal lines, want 1:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, want := range []string{"ip=127.0.0.1", "user=helpdesk", "cmd=MAIL", `code="550 5.7.1"`, "reason=sender", "ceo@other-bank.example"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("refusal line %q lacks %s", lines[0], want)
		}
	}
}

// TestRefusalLogIsRateLimited: a client refused over and over fills the
// log with no more than logBurst lines a window, the last of which says
// that the rest are not logged.
func TestRefusalLogIsRateLimited(t *testing.T) {
	log, buf := testLogger()
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback, Logger: log})
	c := dialRaw(t, e.addr)
	c.cmd("EHLO spammer.test")
	for i := range logBurst + 10 {
		if got := c.cmd(fmt.Sprintf("MAIL FROM:<x%d@elsewhere.test>", i)); !strings.HasPrefix(got, "550") {
			t.Fatalf("MAIL #%d: %q", i, got)
		}
	}
	lines := buf.lines("relay: refused")
	if len(lines) != logBurst {
		t.Fatalf("%d refusal lines for %d refusals, want %d", len(lines), logBurst+10, logBurst)
	}
	if !strings.Contains(lines[logBurst-1], "not logged") {
		t.Errorf("last line %q does not say that further refusals are not logged", lines[logBurst-1])
	}
	// Another client is logged still.
	other := dialRaw(t, serveFrom(t, e, "127.0.0.3"))
	other.cmd("EHLO other.test")
	other.cmd("MAIL FROM:<y@elsewhere.test>")
	if n := len(buf.lines("ip=127.0.0.3")); n != 1 {
		t.Errorf("another client's refusal: %d lines, want 1", n)
	}
}
