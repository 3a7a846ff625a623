// Package sendlimit holds Google's published Gmail sending limits: what
// one account may send through Gmail's SMTP server in a rolling 24 hours
// before Gmail refuses more ("550 5.4.5 Daily user sending limit
// exceeded").
//
// It is a leaf: config takes its defaults from here, accounts maps an
// account kind to them, and smtprelay counts against them. config may
// import no other project package, so the one definition lives below it.
package sendlimit

import (
	"fmt"
	"math"
	"strings"
)

// Google's published limits: https://support.google.com/mail/answer/22839
// (consumer Gmail) and https://support.google.com/a/answer/166852 (Google
// Workspace).
const (
	GmailMessages        = 500    // messages per 24 h, consumer Gmail
	WorkspaceMessages    = 2000   // messages per 24 h, Google Workspace
	WorkspaceRecipients  = 10_000 // recipients per 24 h, Workspace
	WorkspaceExternal    = 3000   // recipients outside the domain per 24 h, Workspace
	PerMessageRecipients = 100    // recipients of one message sent over SMTP
)

// Limits are one account's Gmail sending limits.
type Limits struct {
	Messages       int // per rolling 24 h
	Recipients     int // per rolling 24 h; 0 = not counted
	External       int // recipients outside the account's domain per 24 h; 0 = not counted
	PerMessageRcpt int // recipients in one message sent over SMTP; 0 = not checked
}

// Gmail returns the default limits of a consumer Gmail account. Google
// publishes no daily recipient cap for it apart from its message cap.
func Gmail() Limits {
	return Limits{Messages: GmailMessages, PerMessageRcpt: PerMessageRecipients}
}

// Workspace returns the default limits of a Google Workspace account.
func Workspace() Limits {
	return Limits{Messages: WorkspaceMessages, Recipients: WorkspaceRecipients,
		External: WorkspaceExternal, PerMessageRcpt: PerMessageRecipients}
}

// String describes l for people: "500 messages a day, 100 recipients per
// message".
func (l Limits) String() string {
	parts := []string{fmt.Sprintf("%d messages a day", l.Messages)}
	if l.Recipients > 0 {
		parts = append(parts, fmt.Sprintf("%d recipients a day", l.Recipients))
	}
	if l.External > 0 {
		parts = append(parts, fmt.Sprintf("%d external recipients a day", l.External))
	}
	if l.PerMessageRcpt > 0 {
		parts = append(parts, fmt.Sprintf("%d recipients per message", l.PerMessageRcpt))
	}
	return strings.Join(parts, ", ")
}

// WarnAt is the number of messages sent in the window from which an
// account is "near its limit": frac (relay.quota_warn_at, 0.9) of limit,
// rounded up, so a limit of 3 at 0.6 warns from the 2nd message. The relay's
// quota.warning event, `accounts list`, `status` and the console use it
// alike. 0 means no warning (no limit or no threshold).
func WarnAt(limit int, frac float64) int {
	if limit <= 0 || frac <= 0 {
		return 0
	}
	return int(math.Ceil(float64(limit)*frac - 1e-9))
}
