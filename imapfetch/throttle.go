package imapfetch

import (
	"context"
	"fmt"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/throttle"
)

// throttledError ends a session, or keeps one from starting, because Gmail
// asked us to leave the account alone until a time. The worker waits
// until then instead of reconnecting with its usual backoff: every login
// while throttled counts against the account and prolongs the wait.
type throttledError struct {
	until  time.Time
	reason string
	err    error // Gmail's reply; nil when the account was already throttled
}

func (e *throttledError) Error() string {
	s := fmt.Sprintf("throttled by Google until %s (%s)", e.until.Format(time.RFC3339), e.reason)
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *throttledError) Unwrap() error { return e.err }

// stillThrottled keeps a session from connecting while the account's
// recorded throttle, perhaps from another process or from sending, lasts.
func (w *worker) stillThrottled(a *accounts.Account) error {
	if now := w.f.opts.Now(); a.Throttled(now) {
		return &throttledError{until: a.ThrottledUntil, reason: a.ThrottleReason}
	}
	return nil
}

// noteThrottle turns Gmail's throttling reply in err into a throttledError
// and records it on the account; other errors are returned as they are.
func (w *worker) noteThrottle(ctx context.Context, err error) error {
	th, ok := throttle.IMAP(err)
	if !ok {
		return err
	}
	until := th.Until(w.f.opts.Now())
	if ts, ok := w.f.acc.(throttle.Store); ok {
		if serr := ts.SetThrottled(ctx, w.email, until, string(th.Reason)); serr != nil {
			w.log.Warn("imapfetch: recording the throttle on the account", "err", serr)
		}
	}
	w.log.Warn("imapfetch: Gmail is throttling the account; not connecting until then",
		"reason", th.Reason, "until", until, "asked_by_google", th.Asked, "reply", th.Text)
	return &throttledError{until: until, reason: string(th.Reason), err: err}
}

// clearThrottle forgets a throttle once Gmail served the account again.
func (w *worker) clearThrottle(ctx context.Context, a *accounts.Account) {
	if a.ThrottledUntil.IsZero() {
		return
	}
	if ts, ok := w.f.acc.(throttle.Store); ok {
		if err := ts.ClearThrottled(ctx, w.email, a.ThrottledUntil); err != nil {
			w.log.Warn("imapfetch: clearing the account's throttle", "err", err)
			return
		}
	}
	a.ThrottledUntil, a.ThrottleReason = time.Time{}, ""
	w.log.Info("imapfetch: Gmail serves the account again; throttle cleared")
}
