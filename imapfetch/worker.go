package imapfetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"golang.org/x/oauth2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/oauth"
)

// errLeaseLost is the cause of a session's context when the account's lease
// could not be renewed: another process may be polling now.
var errLeaseLost = errors.New("imapfetch: account lease lost")

// errStopped ends a worker for good: the account was disconnected or put
// in error, and only an admin brings it back.
var errStopped = errors.New("imapfetch: account no longer connected")

// worker polls one account. Its state outlives sessions (connections): the
// token source, so an access token survives a reconnect, and the mails it
// quarantined, so they are not tried again while the cursor is held below
// them by another failing mail.
type worker struct {
	f     *Fetcher
	email string
	log   *slog.Logger

	src     *oauth.Source
	refresh string // the refresh token src was built with

	uidValidity uint32
	quarantined map[uint32]bool // UIDs under uidValidity
	failed      map[uint32]bool // UIDs with an attempt counted

	polled bool // the last session completed at least one poll

	access string // the last access token seen, to notice refreshes
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
		case needsReconnect(err):
			if w.tokenChanged(ctx) {
				w.log.Info("imapfetch: account was reconnected with a new token; logging in again")
				continue
			}
			w.markNeedsReconnect(ctx, err)
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

// needsReconnect reports the failures only an admin's reconnect fixes:
// Google revoked the grant (G15), or the stored refresh token no longer
// decrypts.
func needsReconnect(err error) bool {
	return errors.Is(err, oauth.ErrInvalidGrant) || errors.Is(err, oauth.ErrOpen)
}

// tokenChanged reloads the stored refresh token and reports whether it
// differs from the one in use: an admin reconnected the account, or another
// process rotated the token. The next session then uses the new one.
func (w *worker) tokenChanged(ctx context.Context) bool {
	tok, err := w.f.acc.RefreshToken(ctx, w.email)
	if err != nil || tok == w.refresh {
		return false
	}
	w.src = nil
	return true
}

// markNeedsReconnect puts the account in error with the warning an admin
// sees in `accounts list` (G15), for the failures only a reconnect fixes:
// Google revoked the grant, or the stored token no longer decrypts. The
// worker then stops until the account is reconnected.
func (w *worker) markNeedsReconnect(ctx context.Context, cause error) {
	warning := fmt.Sprintf("Google revoked mailgate's access (invalid_grant): reconnect with `mailgate accounts reconnect %s`", w.email)
	if !errors.Is(cause, oauth.ErrInvalidGrant) {
		warning = fmt.Sprintf("mailgate cannot decrypt the stored refresh token (was secrets.key_file replaced?): reconnect with `mailgate accounts reconnect %s`", w.email)
	}
	w.log.Error("imapfetch: account needs to be reconnected; stopping until it is", "err", cause)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.f.opts.CommandTimeout)
	defer cancel()
	if err := w.f.acc.SetError(sctx, w.email, warning, cause); err != nil && !errors.Is(err, accounts.ErrDisconnected) {
		w.log.Error("imapfetch: could not record the account error", "err", err)
	}
}

// source returns the account's token source, building it from the stored
// refresh token on first use.
func (w *worker) source(ctx context.Context) (*oauth.Source, error) {
	if w.src != nil {
		return w.src, nil
	}
	tok, err := w.f.acc.RefreshToken(ctx, w.email)
	if errors.Is(err, accounts.ErrDisconnected) || errors.Is(err, accounts.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", errStopped, err)
	}
	if err != nil {
		return nil, err
	}
	o := &w.f.opts
	save := func(ctx context.Context, newRefresh string) error {
		if err := w.f.acc.SaveRefreshToken(ctx, w.email, newRefresh); err != nil {
			return err
		}
		w.refresh = newRefresh
		return nil
	}
	opts := []oauth.SourceOption{oauth.WithClock(o.Now)}
	if o.HTTPClient != nil {
		opts = append(opts, oauth.WithHTTPClient(o.HTTPClient))
	}
	w.src = oauth.NewSource(o.OAuth, tok, save, opts...)
	w.refresh = tok
	return w.src, nil
}

// noteToken tells Options.OnTokenRefresh about a refresh. Source.Token
// refreshes only when its access token is missing or about to expire, which
// shows here as a new access token, or as an error from the token endpoint
// (an ended ctx is no refresh failure).
func (w *worker) noteToken(ctx context.Context, tok *oauth2.Token, err error) {
	hook := w.f.opts.OnTokenRefresh
	switch {
	case hook == nil:
	case err != nil:
		if ctx.Err() == nil {
			hook(w.email, err)
		}
	case tok.AccessToken != w.access:
		w.access = tok.AccessToken
		hook(w.email, nil)
	}
}

// acquireLease waits until this worker holds the account's lease, and
// reports false if ctx ended first.
func (w *worker) acquireLease(ctx context.Context) bool {
	o := &w.f.opts
	waiting := false
	for {
		ok, err := w.f.acc.AcquireLease(ctx, w.email, o.Holder, o.LeaseTTL)
		switch {
		case ok:
			if waiting {
				w.log.Info("imapfetch: took over the account lease")
			}
			return true
		case err != nil && ctx.Err() == nil:
			w.log.Warn("imapfetch: acquire lease", "err", err)
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
			ok, err := w.f.acc.RenewLease(lctx, w.email, o.Holder, o.LeaseTTL)
			switch {
			case err == nil && ok:
				lastOK = o.Now()
			case err == nil && !ok:
				cancel(errLeaseLost)
				return
			case lctx.Err() != nil:
				return
			default:
				w.log.Warn("imapfetch: renew lease", "err", err)
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
		if err := w.f.acc.ReleaseLease(rctx, w.email, o.Holder); err != nil {
			w.log.Warn("imapfetch: release lease", "err", err)
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
