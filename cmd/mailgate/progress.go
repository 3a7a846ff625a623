package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progress reports "done/total mails" of a long fetch or import in the
// form that suits where it goes. On a terminal it is one line, redrawn in
// place with \r, with the rate and the time left. Into a pipe or a log
// file, \r would glue thousands of counts into one line, so it writes a
// plain line every few seconds instead, and one at the end.
type progress struct {
	w     io.Writer
	label string
	tty   bool
	every time.Duration // how often a line is written: 200 ms on a tty, 5 s else
	now   func() time.Time

	start, last time.Time
	drawn       bool // a tty line is open (not yet ended by a newline)
	done, total int  // the latest counts
	shown       bool // the latest counts were written
}

// newProgress returns the reporter for w, which is a terminal when it is
// an *os.File on a character device.
func newProgress(w io.Writer, label string) *progress {
	p := &progress{w: w, label: label, tty: isTerminal(w), every: 5 * time.Second, now: time.Now}
	if p.tty {
		p.every = 200 * time.Millisecond
	}
	p.start = p.now()
	p.last = p.start
	return p
}

// isTerminal says whether w writes to a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// update is called after each mail, with the number done and known.
func (p *progress) update(done, total int) {
	p.done, p.total, p.shown = done, total, false
	now := p.now()
	if now.Sub(p.last) < p.every && !(p.tty && done == total) {
		return
	}
	p.last = now
	p.write(now)
}

func (p *progress) write(now time.Time) {
	p.shown = true
	done, total := p.done, p.total
	line := fmt.Sprintf("%s: %d/%d mails", p.label, done, total)
	if elapsed := now.Sub(p.start); elapsed > 0 && done > 0 {
		rate := float64(done) / elapsed.Seconds()
		line += fmt.Sprintf(", %.0f/s", rate)
		if left := total - done; left > 0 {
			line += ", about " + time.Duration(float64(left)/rate*float64(time.Second)).Round(time.Second).String() + " left"
		}
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\033[K", line) // \033[K clears what a longer line left
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, line)
}

// finish writes the last counts if they were not, and ends the redrawn
// line on a terminal, before the summary.
func (p *progress) finish() {
	if !p.shown && p.total > 0 {
		p.write(p.now())
	}
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
