package smtprelay

import (
	"context"
	"fmt"
)

// Route names a way out of the relay, as the queue records it, the log
// shows it and metrics count it.
type Route string

const (
	RouteGmail     Route = "gmail"     // the account's Gmail SMTP, XOAUTH2
	RouteDirect    Route = "direct"    // DKIM-signed, to the recipients' MX hosts
	RouteSmarthost Route = "smarthost" // DKIM-signed, through relay.smarthost
	// RouteDeferred is recorded for a message kept queued until its
	// account's Gmail quota frees: no route tries it meanwhile.
	RouteDeferred Route = "deferred"
	// RouteNone is told to OnDelivery for the recipients of a message that
	// expired before any route tried it, and recorded for a message whose
	// envelope addresses no route can deliver.
	RouteNone Route = "none"
)

var routes = []Route{RouteGmail, RouteDirect, RouteSmarthost, RouteDeferred, RouteNone}

// String returns the route as the queue records it.
func (r Route) String() string { return string(r) }

// ParseRoute reads a route as String writes it.
func ParseRoute(s string) (Route, error) {
	for _, r := range routes {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown route %q (want gmail, direct, smarthost, deferred or none)", s)
}

// Outcome is what one try did for one recipient.
type Outcome string

const (
	Delivered Outcome = "delivered" // the recipient's server took the message
	// Deferred is a temporary failure (SMTP 4xx, a dropped connection, a
	// DNS timeout): the recipient is tried again later.
	Deferred Outcome = "deferred"
	// Bounced is a permanent failure (SMTP 5xx, a null MX), or a message
	// that outlived the queue: a DSN goes back to the sender.
	Bounced Outcome = "bounced"
)

// String returns the outcome as metrics label it.
func (o Outcome) String() string { return string(o) }

// RcptResult is what one try did for one recipient.
type RcptResult struct {
	Rcpt    string
	Outcome Outcome
	Err     error // why it was not delivered; nil when Delivered
}

// Result is what one try through a route did: one entry per recipient,
// in the order the route was given them.
type Result []RcptResult

// courier is one way out of the relay, as in chasquid: the Gmail route
// (as one account), the direct route to MX hosts, the smarthost. It tries
// data once for each recipient and says what became of each; whether a
// failure is temporary or permanent is decided there, at the protocol
// boundary (isTemporary), so the relay never reads SMTP codes.
type courier interface {
	Deliver(ctx context.Context, from string, rcpts []string, data []byte) Result
}

// failAll gives every recipient err, as o.
func failAll(rcpts []string, err error, o Outcome) Result {
	res := make(Result, len(rcpts))
	for i, rc := range rcpts {
		res[i] = RcptResult{Rcpt: rc, Outcome: o, Err: err}
	}
	return res
}

// failed is rcpt failing with err, deferred or bounced as isTemporary
// says.
func failed(rcpt string, err error) RcptResult {
	o := Bounced
	if isTemporary(err) {
		o = Deferred
	}
	return RcptResult{Rcpt: rcpt, Outcome: o, Err: err}
}

// failAllBy fails every recipient with err, as failed does.
func failAllBy(rcpts []string, err error) Result {
	res := make(Result, len(rcpts))
	for i, rc := range rcpts {
		res[i] = failed(rc, err)
	}
	return res
}

// rcpts returns the recipients with outcome o, in order.
func (res Result) rcpts(o Outcome) []string {
	var out []string
	for _, rr := range res {
		if rr.Outcome == o {
			out = append(out, rr.Rcpt)
		}
	}
	return out
}

// errs returns the error of each recipient with outcome o.
func (res Result) errs(o Outcome) map[string]error {
	out := map[string]error{}
	for _, rr := range res {
		if rr.Outcome == o {
			out[rr.Rcpt] = rr.Err
		}
	}
	return out
}

// except returns res without the recipients in drop.
func (res Result) except(drop []string) Result {
	skip := map[string]bool{}
	for _, rc := range drop {
		skip[rc] = true
	}
	var out Result
	for _, rr := range res {
		if !skip[rr.Rcpt] {
			out = append(out, rr)
		}
	}
	return out
}
