// Package throttle recognises Gmail's throttling replies, on IMAP and on
// SMTP, and says how long to stay away from the account. It is the one
// place that reads those replies: imapfetch and smtprelay ask it, and the
// account records the outcome (accounts.Store.SetThrottled) so every
// process and every view sees the same "throttled until".
//
// Gmail's replies, as they arrive:
//
//	IMAP  NO [ALERT] Too many simultaneous connections. (Failure)      at login, beyond ~15 connections
//	IMAP  NO [THROTTLED] ...                                           any command, the account is being slowed
//	IMAP  NO [OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)
//	SMTP  421 4.7.0 Try again later, closing connection.
//	SMTP  454 4.7.0 Too many login attempts, please try again later.
package throttle

import (
	"context"
	"errors"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-smtp"
)

// Reason is which of Gmail's limits the account ran into, in words an
// admin reads in `accounts list` and the console.
type Reason string

const (
	TooManyConnections Reason = "too many simultaneous IMAP connections"
	Throttled          Reason = "IMAP commands throttled"
	Bandwidth          Reason = "command or bandwidth limit exceeded"
	TryAgainLater      Reason = "SMTP: try again later"
	TooManyLogins      Reason = "too many login attempts"
)

// Default waits when Google does not say how long. Gmail's bandwidth limits
// are counted per day and free gradually, so an hour is the shortest wait
// worth a new try; the others are short-lived (a connection closing, a
// burst of logins) and a few minutes is enough.
const (
	DefaultBandwidth = time.Hour
	DefaultShort     = 5 * time.Minute
)

// maxAsked caps a wait Google names, so that a misread reply cannot park an
// account for days.
const maxAsked = 24 * time.Hour

// Throttle is one throttling reply, understood.
type Throttle struct {
	Reason Reason
	// Wait is how long to stay away: what Google asked for, else the
	// default for Reason.
	Wait time.Duration
	// Asked is set when the reply named the wait itself.
	Asked bool
	// Text is the server's reply, for logs.
	Text string
}

// Until returns when the account may be tried again: Wait after now,
// lengthened by up to a tenth, so that the processes and accounts throttled
// together do not all come back in the same second.
func (t Throttle) Until(now time.Time) time.Time {
	return now.Add(t.Wait + rand.N(t.Wait/10+1))
}

// IMAP recognises a throttling reply in err (an *imap.Error anywhere in its
// chain).
func IMAP(err error) (Throttle, bool) {
	var ie *imap.Error
	if !errors.As(err, &ie) {
		return Throttle{}, false
	}
	text := strings.ToLower(ie.Text)
	var r Reason
	switch {
	case strings.Contains(text, "too many simultaneous connections"):
		r = TooManyConnections
	case ie.Code == "OVERQUOTA" && !strings.Contains(text, "quota exceeded") || strings.Contains(text, "exceeded command or bandwidth limits"):
		// [OVERQUOTA] is also what a full mailbox answers APPEND with
		// ("Quota exceeded"); only the bandwidth wording is throttling.
		r = Bandwidth
	case ie.Code == "THROTTLED":
		r = Throttled
	default:
		return Throttle{}, false
	}
	return newThrottle(r, ie.Text), true
}

// SMTP recognises a throttling reply in err (an *smtp.SMTPError anywhere in
// its chain). Gmail's daily sending limit is not one: the relay counts it
// as its quota (550 5.4.5).
func SMTP(err error) (Throttle, bool) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return Throttle{}, false
	}
	text := strings.ToLower(se.Message)
	var r Reason
	switch {
	case se.Code == 454 && strings.Contains(text, "too many login attempts"):
		r = TooManyLogins
	case se.Code == 421 && se.EnhancedCode == smtp.EnhancedCode{4, 7, 0} && strings.Contains(text, "try again later"):
		r = TryAgainLater
	default:
		return Throttle{}, false
	}
	return newThrottle(r, se.Message), true
}

func newThrottle(r Reason, text string) Throttle {
	t := Throttle{Reason: r, Wait: DefaultShort, Text: text}
	if r == Bandwidth {
		t.Wait = DefaultBandwidth
	}
	if d, ok := asked(text); ok {
		t.Wait, t.Asked = d, true
	}
	return t
}

// askedRE finds a wait named in a reply: "try again in 30 minutes",
// "retry after 120 seconds".
var askedRE = regexp.MustCompile(`(?i)\b(?:in|after)\s+(\d+)\s*(second|sec|minute|min|hour|h)s?\b`)

func asked(text string) (time.Duration, bool) {
	m := askedRE.FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n <= 0 {
		return 0, false
	}
	unit := time.Second
	switch strings.ToLower(m[2]) {
	case "minute", "min":
		unit = time.Minute
	case "hour", "h":
		unit = time.Hour
	}
	return min(time.Duration(n)*unit, maxAsked), true
}

// Store records a throttle on the account, where every process and view
// reads it (*accounts.Store has it). Recording keeps the longer of two
// waits; clearing, after Gmail served the account again, leaves a throttle
// later than seen, the one the caller saw before that success.
type Store interface {
	SetThrottled(ctx context.Context, email string, until time.Time, reason string) error
	ClearThrottled(ctx context.Context, email string, seen time.Time) error
}
