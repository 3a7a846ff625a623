package health

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer is a log destination several goroutines write to.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.b.String()), "\n")
}

func newReporter(remind time.Duration) (*Reporter, *logBuffer) {
	var buf logBuffer
	return New(Options{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Part: "relay delivery",
		Dependency: "redis", Paused: "delivery is paused", Remind: remind}), &buf
}

// TestOneLineEachWay: many workers failing many times during an outage
// make one line when it starts and one when it ends, with the count.
func TestOneLineEachWay(t *testing.T) {
	r, buf := newReporter(time.Hour)
	ctx := context.Background()
	refused := errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				r.Report(ctx, time.Now(), refused)
			}
		}()
	}
	wg.Wait()
	time.Sleep(20 * time.Millisecond)
	r.Report(ctx, time.Now(), nil)
	r.Report(ctx, time.Now(), nil)

	lines := buf.lines()
	if len(lines) != 2 {
		t.Fatalf("log:\n%s\nwant 2 lines: unreachable, then back", strings.Join(lines, "\n"))
	}
	if !strings.Contains(lines[0], "relay delivery: redis unreachable; delivery is paused") || !strings.Contains(lines[0], "connection refused") {
		t.Errorf("first line %q: want the part, what is paused and the error", lines[0])
	}
	if !strings.Contains(lines[1], "relay delivery: redis back after") || !strings.Contains(lines[1], "19 more failures suppressed") {
		t.Errorf("second line %q: want how long it was down and the 19 failures not logged", lines[1])
	}
}

// TestReminderCountsFailures: a long outage is reminded with the count of
// failures since the last line, less and less often.
func TestReminderCountsFailures(t *testing.T) {
	r, buf := newReporter(30 * time.Millisecond)
	ctx := context.Background()
	down := errors.New("i/o timeout")
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		r.Report(ctx, time.Now(), down)
		time.Sleep(5 * time.Millisecond)
	}
	lines := buf.lines()
	var reminders int
	for _, l := range lines[1:] {
		if !strings.Contains(l, "still unreachable after") || !strings.Contains(l, "more failures suppressed") {
			t.Errorf("reminder %q: want how long and how many failures", l)
		}
		reminders++
	}
	// At 30ms, 90ms, 210ms: doubling waits make 2 reminders in 200ms, not 6.
	if reminders < 1 || reminders > 3 {
		t.Errorf("%d reminders in 200ms with a first one after 30ms, doubling:\n%s", reminders, strings.Join(lines, "\n"))
	}
}

// TestStaleAndCancelledFailures: a call that hung through the outage and
// fails after others saw the dependency back does not reopen the outage,
// and a call cut by the caller's own shutdown is no failure at all.
func TestStaleAndCancelledFailures(t *testing.T) {
	r, buf := newReporter(time.Hour)
	ctx := context.Background()
	hung := time.Now()
	r.Report(ctx, time.Now(), errors.New("connection refused"))
	time.Sleep(10 * time.Millisecond)
	r.Report(ctx, time.Now(), nil)
	r.Report(ctx, hung, errors.New("i/o timeout"))

	stopped, cancel := context.WithCancel(ctx)
	cancel()
	r.Report(stopped, time.Now(), context.Canceled)

	if lines := buf.lines(); len(lines) != 2 {
		t.Fatalf("log:\n%s\nwant only the outage and its end", strings.Join(lines, "\n"))
	}
	r.Report(ctx, time.Now(), errors.New("connection refused"))
	if lines := buf.lines(); len(lines) != 3 || !strings.Contains(lines[2], "unreachable") {
		t.Fatalf("log:\n%s\nwant a new outage opened by a call begun after the last one ended", strings.Join(lines, "\n"))
	}
}
