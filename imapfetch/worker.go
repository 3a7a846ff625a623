package imapfetch

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/oauth"
)

// errLeaseLost is the cause of a session's context when the account's lease
// could not be renewed: another process holds it now, or Redis did not
// answer for so long that the lease may have run out.
var errLeaseLost = errors.New("imapfetch: account lease lost")

// storeRetry is how often a worker asks Redis again while it does not
// answer: fetching resumes within about this long after Redis is back.
const storeRetry = time.Second

// storeBackoffMax caps the wait after sessions that Redis failed although it
// answered the lease (slow, or partly down): they log in to IMAP each time,
// so they are spaced out, but never so far that fetching resumes later than
// a few seconds after Redis is well again.
const storeBackoffMax = 4 * storeRetry

// storeError marks a failure of the account or ticket store (Redis) rather
// than of the IMAP server: the worker then waits for Redis to answer again
// instead of backing off as from a failing server.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// storeErr wraps a non-nil store error in storeError.
func storeErr(err error) error {
	if err == nil {
		return nil
	}
	return &storeError{err}
}

// errStopped ends a worker for good: the account was disconnected or put
// in error, and only an admin brings it back.
var errStopped = errors.New("imapfetch: account no longer connected")

// worker polls one account. Its state outlives sessions (connections): the
// mails it quarantined, so they are not tried again while the cursor is
// held below them by another failing mail. The access token outlives them
// too, in Options.Tokens.
type worker struct {
	f     *Fetcher
	email string
	log   *slog.Logger

	inbox, sent uidMarks // per folder

	polled bool // the last session completed at least one poll
}

func (f *Fetcher) newWorker(email string) *worker {
	return &worker{
		f:     f,
		email: email,
		log:   f.log.With("account", email),
		inbox: newUIDMarks(),
		sent:  newUIDMarks(),
	}
}

// uidMarks is what a worker remembers of one folder's mail across
// sessions, under one UIDVALIDITY.
type uidMarks struct {
	uidValidity uint32
	quarantined map[uint32]bool // UIDs under uidValidity
	failed      map[uint32]bool // UIDs with an attempt counted
	// complete says failed holds every UID of the folder with an attempt
	// counted in the store. Each session starts without it: attempts may
	// have been counted by a process that held the lease in between (a
	// `fetch --once`, a serve before a restart), and are read nowhere but
	// in the store. It holds once a poll of this session has read the
	// folder: a failed mail stays above the cursor (and unread, in INBOX),
	// so that poll met every one of them again.
	complete bool
}

func newUIDMarks() uidMarks {
	return uidMarks{quarantined: make(map[uint32]bool), failed: make(map[uint32]bool)}
}

// reset forgets the marks when the folder's UIDVALIDITY is not theirs.
func (m *uidMarks) reset(uidValidity uint32) {
	if m.uidValidity != uidValidity {
		m.uidValidity = uidValidity
		clear(m.quarantined)
		clear(m.failed)
		m.complete = false
	}
}

// run polls the account until ctx ends or the account must be reconnected
// by an admin. Every other failure is retried: a failing IMAP server with
// backoff, a failing Redis as soon as it answers again.
func (w *worker) run(ctx context.Context) {
	o := &w.f.opts
	bo := backoff{min: min(time.Second, o.BackoffMax), max: o.BackoffMax}
	sbo := backoff{min: storeRetry / 2, max: storeBackoffMax}
	w.log.Info("imapfetch: worker started")
	defer w.log.Info("imapfetch: worker stopped")
	defer w.f.share.drop(w.email)
	for ctx.Err() == nil {
		if !w.acquireLease(ctx) {
			return
		}
		lctx, release := w.holdLease(ctx)
		start := o.Now()
		_, err := w.session(lctx, false, nil)
		leaseLost := errors.Is(context.Cause(lctx), errLeaseLost)
		release()
		if w.polled {
			bo.reset()
			sbo.reset()
		}
		var se *storeError
		var te *throttledError
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errStopped):
			w.log.Info("imapfetch: account is no longer connected")
			return
		case oauth.NeedsReconnect(err):
			// Options.Tokens recorded it on the account; a reconnect
			// changes the account and the supervisor starts a new worker.
			w.log.Info("imapfetch: account needs to be reconnected; stopping until it is", "err", err)
			return
		case errors.Is(context.Cause(lctx), errLeaseYield):
			continue // handed to another process; acquireLease waits for this one's turn
		case leaseLost:
			continue // holdLease said why; acquireLease waits for it
		case errors.As(err, &te):
			// Gmail asked for a pause: every login meanwhile would count
			// against the account. The next session reads the account
			// (Redis, not Gmail) again within PollInterval, so a throttle
			// cleared by an admin or by another process's success ends
			// the wait early. The lease is released meanwhile; a standby
			// process that takes it reads the same throttle and waits too.
			wait := min(max(te.until.Sub(o.Now()), 0), o.PollInterval)
			w.log.Debug("imapfetch: waiting out Gmail's throttle", "until", te.until, "reason", te.reason, "recheck_after", wait.Round(time.Millisecond))
			if !sleep(ctx, wait) {
				return
			}
			continue
		case errors.As(err, &se):
			// Not the IMAP server's fault, so its backoff does not grow;
			// then acquireLease asks Redis every storeRetry until it
			// answers.
			wait := sbo.next()
			w.log.Warn("imapfetch: session ended: Redis failed; resuming once it answers", "err", err,
				"after", wait, "ran", o.Now().Sub(start).Round(time.Millisecond))
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		wait := bo.next()
		level := slog.LevelWarn
		if errors.Is(err, errServerClosed) && w.polled {
			// Servers end long sessions (Gmail's IDLE cut-off); routine.
			level = slog.LevelInfo
		}
		w.log.Log(ctx, level, "imapfetch: session ended, reconnecting", "err", err, "after", wait, "ran", o.Now().Sub(start).Round(time.Millisecond))
		if !sleep(ctx, wait) {
			return
		}
	}
}

// acquireLease waits until this worker holds the account's lease, and
// reports false if ctx ended first. A lease this fetcher held already is
// its own at once; so is one whose holder was a process on this host that
// is gone. Another holder's lease is waited out; while Redis does not
// answer, it is asked again every storeRetry.
func (w *worker) acquireLease(ctx context.Context) bool {
	o := &w.f.opts
	var held accounts.Lease // someone else's, last seen
	for {
		if !w.f.share.await(ctx, w.email) {
			return false
		}
		start := time.Now()
		l, err := w.f.acc.AcquireLease(ctx, w.email, w.f.me, o.LeaseTTL)
		w.f.redis.Report(ctx, start, err)
		if ctx.Err() != nil {
			return false
		}
		if err != nil { // logged by w.f.redis
			if !sleep(ctx, jitter(storeRetry)) {
				return false
			}
			continue
		}
		if l.Mine {
			switch {
			case l.TookOver != (accounts.Holder{}):
				w.log.Info("imapfetch: took over the account lease from " + l.TookOver.Process() + ": no such process runs on this host any more")
			case held.Holder != (accounts.Holder{}):
				w.log.Info("imapfetch: took over the account lease from " + held.Holder.Process() + ": it was released or ran out")
			}
			return true
		}
		if l.Holder != held.Holder {
			w.log.Info("imapfetch: lease held by "+l.String()+"; standing by", "holder", l.Holder.String())
		}
		held = l
		if w.f.share.standBy(w.email) {
			continue // the share looks at the lease and wakes this worker when it is free
		}
		// Ask again soon after it runs out; perturbed, so that standby
		// processes do not all ask at once.
		wait := jitter(o.LeaseTTL / 3)
		if !l.Until.IsZero() {
			wait = min(wait, time.Until(l.Until)+jitter(100*time.Millisecond))
		}
		if !sleep(ctx, max(wait, 10*time.Millisecond)) {
			return false
		}
	}
}

// backoff is a capped exponential backoff with jitter.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur *= 2
	}
	if b.cur > b.max {
		b.cur = b.max
	}
	return jitter(b.cur)
}

func (b *backoff) reset() { b.cur = 0 }

// jitter returns a duration in [d/2, d]: perturbed, so that accounts (and
// processes) that failed together do not all retry at the same instant.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
