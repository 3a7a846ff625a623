package imapfetch

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/mailgate/mailgate/oauth"
)

// errLeaseLost is the cause of a session's context when the account's lease
// could not be renewed: another process may be polling now.
var errLeaseLost = errors.New("imapfetch: account lease lost")

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

	uidValidity uint32
	quarantined map[uint32]bool // UIDs under uidValidity
	failed      map[uint32]bool // UIDs with an attempt counted

	polled bool // the last session completed at least one poll
}

func (f *Fetcher) newWorker(email string) *worker {
	return &worker{
		f:           f,
		email:       email,
		log:         f.log.With("account", email),
		quarantined: make(map[uint32]bool),
		failed:      make(map[uint32]bool),
	}
}

// run polls the account until ctx ends or the account must be reconnected
// by an admin. Every other failure is retried with backoff.
func (w *worker) run(ctx context.Context) {
	o := &w.f.opts
	bo := backoff{min: min(time.Second, o.BackoffMax), max: o.BackoffMax}
	w.log.Info("imapfetch: worker started")
	defer w.log.Info("imapfetch: worker stopped")
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
		}
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
		case leaseLost:
			w.log.Warn("imapfetch: lost the account lease; another process may be polling it now")
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
// reports false if ctx ended first.
func (w *worker) acquireLease(ctx context.Context) bool {
	o := &w.f.opts
	waiting := false
	for {
		start := time.Now()
		ok, err := w.f.acc.AcquireLease(ctx, w.email, o.Holder, o.LeaseTTL)
		w.f.redis.Report(ctx, start, err)
		switch {
		case ok:
			if waiting {
				w.log.Info("imapfetch: took over the account lease")
			}
			return true
		case err != nil: // logged by w.f.redis
		case !waiting && err == nil:
			w.log.Info("imapfetch: another process is polling this account; standing by")
			waiting = true
		}
		// Perturbed so that standby processes do not all ask at once.
		if !sleep(ctx, jitter(o.LeaseTTL/3)) {
			return false
		}
	}
}

// holdLease renews the lease in the background every LeaseTTL/3. The
// returned context is cancelled with cause errLeaseLost when the lease is
// gone (or could not be renewed for longer than it lasts). release stops the
// renewal and gives the lease up.
func (w *worker) holdLease(ctx context.Context) (context.Context, func()) {
	o := &w.f.opts
	lctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(o.LeaseTTL / 3)
		defer t.Stop()
		lastOK := o.Now()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			start := time.Now()
			ok, err := w.f.acc.RenewLease(lctx, w.email, o.Holder, o.LeaseTTL)
			w.f.redis.Report(lctx, start, err)
			switch {
			case err == nil && ok:
				lastOK = o.Now()
			case err == nil && !ok:
				cancel(errLeaseLost)
				return
			case lctx.Err() != nil:
				return
			default: // logged by w.f.redis
				// Once the lease may have expired, someone else may poll.
				if o.Now().Sub(lastOK) > o.LeaseTTL*2/3 {
					cancel(errLeaseLost)
					return
				}
			}
		}
	}()
	return lctx, func() {
		cancel(nil)
		<-done
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		start := time.Now()
		w.f.redis.Report(rctx, start, w.f.acc.ReleaseLease(rctx, w.email, o.Holder))
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
