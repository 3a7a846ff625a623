package smtprelay

import (
	"context"
	"fmt"

	"github.com/mailgate/mailgate/throttle"
)

// gmailThrottledError is Gmail answering the account's login or message
// with one of its throttling replies ("421 4.7.0 Try again later", "454
// 4.7.0 Too many login attempts"): Gmail's trouble with the account, not
// the message's, so the try does not count and nothing bounces.
type gmailThrottledError struct {
	th  throttle.Throttle
	err error
}

func (e *gmailThrottledError) Error() string {
	return fmt.Sprintf("Gmail is throttling the account (%s): %v", e.th.Reason, e.err)
}

func (e *gmailThrottledError) Unwrap() error { return e.err }

// asThrottled wraps err in gmailThrottledError when it is one of Gmail's
// throttling replies.
func asThrottled(err error) error {
	if th, ok := throttle.SMTP(err); ok {
		return &gmailThrottledError{th: th, err: err}
	}
	return err
}

// gmailThrottled returns the throttling reply among res, if any.
func gmailThrottled(res Result) (*gmailThrottledError, bool) {
	for _, rr := range res {
		if te, ok := rr.Err.(*gmailThrottledError); ok {
			return te, true
		}
	}
	return nil, false
}

// throttled turns a try that Gmail throttled into a wait: the account is
// marked throttled until the time Google asked for (or throttle's default)
// and the message waits for it without the try being counted. It does
// not go direct instead: like any other temporary Gmail failure it stays on
// the account's Gmail, so that it still lands in the Sent folder.
func (r *Relay) throttled(ctx context.Context, m *Message, d decision, te *gmailThrottledError) decision {
	until := te.th.Until(r.opts.Now())
	if ts, ok := r.acc.(throttle.Store); ok {
		if err := ts.SetThrottled(ctx, d.account, until, string(te.th.Reason)); err != nil {
			r.log.Warn("relay: recording Gmail's throttle on the account", "account", d.account, "err", err)
		}
	}
	r.log.Warn("relay: Gmail is throttling the account; its mail waits", "account", d.account, "queue_id", m.ID,
		"reason", te.th.Reason, "until", until, "asked_by_google", te.th.Asked, "reply", te.th.Text)
	m.Attempts-- // Gmail's limit on the account is not a failed try of this message
	return decision{route: RouteDeferred, reason: reasonGmailThrottled, account: d.account, until: until,
		attrs: []any{"throttle", string(te.th.Reason)}}
}

// clearThrottle forgets the account's throttle once Gmail took its mail.
func (r *Relay) clearThrottle(ctx context.Context, d decision, res Result) {
	if d.throttledUntil.IsZero() || len(res.rcpts(Delivered)) == 0 {
		return
	}
	if ts, ok := r.acc.(throttle.Store); ok {
		if err := ts.ClearThrottled(ctx, d.account, d.throttledUntil); err != nil {
			r.log.Warn("relay: clearing the account's throttle", "account", d.account, "err", err)
			return
		}
		r.log.Info("relay: Gmail takes the account's mail again; throttle cleared", "account", d.account)
	}
}
