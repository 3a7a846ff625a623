package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// fakeClock advances by step at each reading.
func fakeClock(step time.Duration) func() time.Time {
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return func() time.Time { t = t.Add(step); return t }
}

// TestProgressIntoAPipe: 10,000 mails at 1 ms each, written to a
// non-terminal, make a few whole lines (one every 5 s and the last), not
// 10,000 counts glued by carriage returns.
func TestProgressIntoAPipe(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, "support@example.com")
	if p.tty {
		t.Fatal("a bytes.Buffer taken for a terminal")
	}
	p.now = fakeClock(time.Millisecond)
	p.start, p.last = p.now(), p.now()
	const n = 10000
	for i := 1; i <= n; i++ {
		p.update(i, n)
	}
	p.finish()
	s := out.String()
	if strings.Contains(s, "\r") {
		t.Errorf("output into a pipe has carriage returns: %q", s)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) < 2 || len(lines) > 5 {
		t.Fatalf("%d lines for 10,000 mails over 10 s, want a few:\n%s", len(lines), s)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "support@example.com: ") || !strings.Contains(l, "/10000 mails") {
			t.Errorf("line %q: want \"support@example.com: N/10000 mails\"", l)
		}
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, "10000/10000 mails") {
		t.Errorf("last line %q does not give the final count", last)
	}
}

// TestProgressShortRunIntoAPipe: a run shorter than the interval writes
// its final count once.
func TestProgressShortRunIntoAPipe(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, "a@example.com")
	for i := 1; i <= 3; i++ {
		p.update(i, 3)
	}
	p.finish()
	if got := out.String(); !strings.HasPrefix(got, "a@example.com: 3/3 mails") || strings.Count(got, "\n") != 1 {
		t.Errorf("short run wrote %q, want the one line \"a@example.com: 3/3 mails...\"", got)
	}
}

// TestProgressOnATerminal: one line redrawn with \r, with rate and time
// left, ended by a newline at the finish.
func TestProgressOnATerminal(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, "a@example.com")
	p.tty, p.every = true, 200*time.Millisecond
	p.now = fakeClock(10 * time.Millisecond)
	p.start, p.last = p.now(), p.now()
	for i := 1; i <= 1000; i++ {
		p.update(i, 1000)
	}
	s := out.String()
	if strings.Contains(s, "\n") {
		t.Errorf("tty progress wrote a newline before the finish: %q", s)
	}
	if n := strings.Count(s, "\r"); n < 10 || n > 100 {
		t.Errorf("%d redraws for 1000 mails over 10 s, want one every 200 ms", n)
	}
	if !strings.Contains(s, "/s, about ") || !strings.Contains(s, " left") {
		t.Errorf("tty progress lacks rate and time left: %q", s[:min(len(s), 200)])
	}
	p.finish()
	if !strings.HasSuffix(out.String(), "1000/1000 mails, 100/s\033[K\n") {
		t.Errorf("tty progress ends %q", out.String()[max(0, out.Len()-60):])
	}
}
