package smtprelay

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) lines(substr string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.b.String(), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

func testLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}

// serveFrom serves e's relay on one more listener whose clients appear to
// come from remote, and returns the address to dial.
func serveFrom(t *testing.T, e *relayEnv, remote string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.server.Serve(fromAddr(remote)(l))
	return l.Addr().String()
}

func relayUsers(t *testing.T) map[string]string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"helpdesk": string(hash)}
}

func TestAuthFailuresDisconnect(t *testing.T) {
	log, buf := testLogger()
	const delay = 100 * time.Millisecond
	e := startRelay(t, ServerOptions{Users: relayUsers(t), Logger: log, AuthLimits: AuthLimits{MaxFailures: 3, FailureDelay: delay}})
	c := dialRaw(t, e.addr)
	c.cmd("EHLO guesser.test")
	start := time.Now()
	for i, want := range []string{"535 5.7.8", "535 5.7.8", "421 4.7.0 Too many failed logins on this connection"} {
		if got := c.cmd("AUTH PLAIN " + plainIR("helpdesk", "guess"+string(rune('0'+i)))); !strings.HasPrefix(got, want) {
			t.Fatalf("wrong password #%d: %q, want %q", i+1, got, want)
		}
	}
	if took := time.Since(start); took < 3*delay {
		t.Errorf("3 failures answered in %v, want each delayed by %v", took, delay)
	}
	if !c.closed() {
		t.Error("connection still open after the 421")
	}
	lines := buf.lines("cmd=AUTH")
	if len(lines) != 3 {
		t.Fatalf("log has %d AUTH refusal lines, want one per failure:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if !strings.Contains(l, "ip=127.0.0.1") || !strings.Contains(l, "user=helpdesk") || strings.Contains(l, "guess") {
			t.Errorf("log line %q: want ip and user, and never the password", l)
		}
	}
}

func TestAuthLockoutPerClient(t *testing.T) {
	e := startRelay(t, ServerOptions{Users: relayUsers(t),
		AuthLimits: AuthLimits{MaxFailures: 3, FailureDelay: time.Millisecond, Budget: 4, Lockout: time.Hour}})
	c := dialRaw(t, e.addr)
	c.cmd("EHLO guesser.test")
	for range 3 {
		c.cmd("AUTH PLAIN " + plainIR("helpdesk", "wrong"))
	}
	c = dialRaw(t, e.addr)
	c.cmd("EHLO guesser.test")
	if got := c.cmd("AUTH PLAIN " + plainIR("admin", "wrong")); !strings.HasPrefix(got, "421 4.7.0") {
		t.Fatalf("4th failure of the client (budget 4): %q, want 421 4.7.0", got)
	}
	c = dialRaw(t, e.addr)
	if got := c.cmd("EHLO guesser.test"); !strings.HasPrefix(got, "421 4.7.0") {
		t.Errorf("next connection of a locked-out client: EHLO %q, want 421 4.7.0", got)
	}
	if !c.closed() {
		t.Error("locked-out client's connection still open")
	}
}

// TestRealLoginDuringGuessing: a client guessing the helpdesk's password
// locks itself out, not the helpdesk, which logs in from its own address
// (other loopback addresses, so that AUTH needs no TLS in the test).
func TestRealLoginDuringGuessing(t *testing.T) {
	e := startRelay(t, ServerOptions{Users: relayUsers(t),
		AuthLimits: AuthLimits{MaxFailures: 100, FailureDelay: time.Millisecond, Budget: 5, Lockout: time.Hour}})
	attacker := dialRaw(t, serveFrom(t, e, "127.0.0.5"))
	attacker.cmd("EHLO guesser.test")
	for i := range 5 {
		attacker.cmd("AUTH PLAIN " + plainIR("helpdesk", "guess"+string(rune('a'+i))))
	}
	// Another guessing client gets one try at the locked user name, and
	// then not even the right password helps it.
	other := serveFrom(t, e, "127.0.0.6")
	c := dialRaw(t, other)
	c.cmd("EHLO guesser2.test")
	if got := c.cmd("AUTH PLAIN " + plainIR("helpdesk", "guess")); !strings.HasPrefix(got, "421 4.7.0") {
		t.Errorf("first guess of a new client at a locked user: %q, want 421 4.7.0", got)
	}
	c = dialRaw(t, other)
	c.cmd("EHLO guesser2.test")
	if got := c.cmd("AUTH PLAIN " + plainIR("helpdesk", "s3cret")); !strings.HasPrefix(got, "421 4.7.0") {
		t.Errorf("right password from a client that failed, user locked: %q, want 421 4.7.0", got)
	}

	real := dialRaw(t, e.addr)
	real.cmd("EHLO helpdesk.test")
	if got := real.cmd("AUTH PLAIN " + plainIR("helpdesk", "s3cret")); !strings.HasPrefix(got, "235") {
		t.Errorf("the helpdesk's login during the guessing: %q, want 235", got)
	}
	if got := real.send("support@acme.test", "alice@customer.test", "From: support@acme.test\nSubject: x\n\nx\n"); !strings.HasPrefix(got, "250") {
		t.Errorf("sending after login: %q", got)
	}
}

// TestBcryptChecksBounded: 8 clients guessing at once run no more than
// AuthLimits.Checks password comparisons at a time.
func TestBcryptChecksBounded(t *testing.T) {
	e := startRelay(t, ServerOptions{Users: relayUsers(t), AuthLimits: AuthLimits{Checks: 2, FailureDelay: time.Millisecond, Budget: 1000}})
	var running, most atomic.Int32
	g := e.server.guard
	g.mu.Lock()
	compare := g.compare
	g.compare = func(hash, pass []byte) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond)
		return compare(hash, pass)
	}
	g.mu.Unlock()
	var wg sync.WaitGroup
	for range 8 {
		c := dialRaw(t, e.addr)
		c.cmd("EHLO guesser.test")
		wg.Go(func() {
			for range 2 {
				c.cmd("AUTH PLAIN " + plainIR("helpdesk", "wrong"))
			}
		})
	}
	wg.Wait()
	if m := most.Load(); m != 2 {
		t.Errorf("at most %d bcrypt comparisons ran at once, want exactly the bound 2", m)
	}
}

// TestCleanLoginWaitsForOneGuess: while 8 connections guess as fast as
// they may, a login from a client with a clean record waits for at most
// a couple of their bcrypt checks, not for all 8.
func TestCleanLoginWaitsForOneGuess(t *testing.T) {
	e := startRelay(t, ServerOptions{Users: relayUsers(t),
		AuthLimits: AuthLimits{Checks: 1, FailureDelay: time.Nanosecond, Budget: 1 << 30, MaxFailures: 1 << 30}})
	var started atomic.Int32 // compares begun
	var atReal atomic.Int32  // started when the real login's compare began
	g := e.server.guard
	g.mu.Lock()
	compare := g.compare
	g.compare = func(hash, pass []byte) error {
		n := started.Add(1)
		if string(pass) == "s3cret" {
			atReal.Store(n)
		}
		time.Sleep(20 * time.Millisecond)
		return compare(hash, pass)
	}
	g.mu.Unlock()

	guess := serveFrom(t, e, "127.0.0.5")
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 8 {
		c := dialRaw(t, guess)
		c.cmd("EHLO guesser.test")
		wg.Go(func() {
			for !stop.Load() {
				c.cmd("AUTH PLAIN " + plainIR("helpdesk", "wrong"))
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()
	for started.Load() < 20 { // the guessers are all suspects by now
		time.Sleep(10 * time.Millisecond)
	}
	real := dialRaw(t, e.addr)
	real.cmd("EHLO helpdesk.test")
	before := started.Load()
	if got := real.cmd("AUTH PLAIN " + plainIR("helpdesk", "s3cret")); !strings.HasPrefix(got, "235") {
		t.Fatalf("real login: %q", got)
	}
	if waited := atReal.Load() - before - 1; waited > 2 {
		t.Errorf("the clean login waited for %d guessing checks, want at most 2", waited)
	}
}
