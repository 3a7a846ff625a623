// Package health reports in the log when a dependency (Redis) stops
// answering one part of the process and when it answers again: one line
// each way, saying what is paused and for how long it was down, and a
// count of the failures in between instead of a line per retry.
package health

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Options describe one part's view of one dependency.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
	// Part names who reports, as its log lines start ("relay delivery").
	Part string
	// Dependency is what it depends on ("redis").
	Dependency string
	// Paused says what stops while the dependency is down, for the
	// operator reading the first line ("delivery is paused").
	Paused string
	// Remind is how long after the first line a reminder with the count of
	// failures follows while the dependency stays down; each reminder
	// doubles the wait, up to an hour. Default one minute.
	Remind time.Duration
}

// Reporter follows the outcomes of one part's calls to its dependency and
// logs the changes. Its methods may be called from many goroutines: the
// workers of one part share one Reporter, so an outage is one line for the
// part, not one per worker.
type Reporter struct {
	o   Options
	log *slog.Logger

	mu         sync.Mutex
	down       bool
	since      time.Time // the first failure of the current outage
	back       time.Time // the end of the last outage
	suppressed int       // failures not logged since the last line
	remindAt   time.Time
	remindGap  time.Duration
}

// New returns a Reporter that logs with o.Logger.
func New(o Options) *Reporter {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Remind <= 0 {
		o.Remind = time.Minute
	}
	return &Reporter{o: o, log: o.Logger}
}

// Report records the outcome of one call to the dependency that began at
// start: err nil is an answer, anything else a failure. A failure after
// ctx ended is the caller stopping, not the dependency, and is ignored. A
// failure of a call that began before the dependency was seen back (a
// call that hung through the outage) is counted but does not open a new
// outage: the dependency answered others since.
func (r *Reporter) Report(ctx context.Context, start time.Time, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err == nil && r.down:
		// The call reached the dependency when it began, or soon after
		// (a blocking read answers at the end of its wait): count the
		// outage to its start.
		r.down, r.back = false, start
		if r.back.Before(r.since) {
			r.back = r.since
		}
		down := r.back.Sub(r.since)
		r.log.Info(fmt.Sprintf("%s: %s back after %s%s", r.o.Part, r.o.Dependency, roundDuration(down), r.suppressedNote()),
			"down_for", down, "failures", r.suppressed)
		r.suppressed = 0
	case err == nil:
	case !r.down && start.Before(r.back):
		// Part of the outage already reported.
	case r.down:
		r.suppressed++
		if !now.Before(r.remindAt) {
			r.log.Warn(fmt.Sprintf("%s: %s still unreachable after %s%s", r.o.Part, r.o.Dependency, roundDuration(now.Sub(r.since)), r.suppressedNote()),
				"err", err, "failures", r.suppressed)
			r.suppressed = 0
			r.remindGap = min(2*r.remindGap, time.Hour)
			r.remindAt = now.Add(r.remindGap)
		}
	default:
		r.down, r.since, r.suppressed = true, now, 0
		r.remindGap = r.o.Remind
		r.remindAt = now.Add(r.remindGap)
		r.log.Error(fmt.Sprintf("%s: %s unreachable; %s", r.o.Part, r.o.Dependency, r.o.Paused), "err", err)
	}
}

func (r *Reporter) suppressedNote() string {
	switch r.suppressed {
	case 0:
		return ""
	case 1:
		return "; 1 more failure suppressed"
	}
	return fmt.Sprintf("; %d more failures suppressed", r.suppressed)
}

// roundDuration keeps a duration readable in a sentence: 4.2s, 3m10s.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
