// Package accounts keeps the connected Gmail accounts in Redis: identity,
// state, the encrypted refresh token, the fetch cursor, counters, the
// per-account polling lease and poison-mail attempt counts. It is the one
// place both directions read account state from, so imapfetch and smtprelay
// never reach into each other, and every replica on the same Redis sees the
// same accounts.
package accounts

import (
	"errors"
	"fmt"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/sendlimit"
)

// Kind is the type of Google account; it decides the daily sending limits
// the relay applies (DefaultLimits).
type Kind string

const (
	KindGmail     Kind = "gmail"     // consumer Gmail
	KindWorkspace Kind = "workspace" // Google Workspace
)

// String returns the kind as `accounts add --kind` takes it.
func (k Kind) String() string { return string(k) }

// DefaultLimits are Google's published sending limits for an account of
// kind k; relay.*_limit in the configuration can lower or raise them.
func (k Kind) DefaultLimits() sendlimit.Limits {
	if k == KindWorkspace {
		return sendlimit.Workspace()
	}
	return sendlimit.Gmail()
}

// ParseKind accepts "gmail" or "workspace" (any case); "" means gmail.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(strings.ToLower(strings.TrimSpace(s))); k {
	case "":
		return KindGmail, nil
	case KindGmail, KindWorkspace:
		return k, nil
	}
	return "", fmt.Errorf("account kind %q: want gmail or workspace", s)
}

// Fallback is an account's policy for mail that cannot go via Gmail: over
// its quota, with a real attachment, with a From that is not the account.
type Fallback string

const (
	// FallbackDefault lets the relay choose: direct when it can DKIM-sign
	// for the account's domain (so the mail passes DMARC), else defer.
	FallbackDefault Fallback = ""
	// FallbackDirect sends the mail as it is, DKIM-signed, to the
	// recipients' MX hosts or the smarthost.
	FallbackDirect Fallback = "direct"
	// FallbackRewriteFrom sends it from the relay's own address, the
	// account's moved to Reply-To, as mailing lists do for DMARC.
	FallbackRewriteFrom Fallback = "rewrite-from"
	// FallbackDefer keeps it queued until the account's Gmail quota frees.
	// Where waiting cannot help (an attachment, a revoked account) the
	// relay rewrites the From or goes direct instead.
	FallbackDefer Fallback = "defer"
)

// String returns the policy as `accounts set --fallback` takes it.
func (f Fallback) String() string {
	if f == FallbackDefault {
		return "default"
	}
	return string(f)
}

func (f Fallback) valid() bool {
	switch f {
	case FallbackDefault, FallbackDirect, FallbackRewriteFrom, FallbackDefer:
		return true
	}
	return false
}

// ParseFallback reads a policy as String writes it; "" is the default too.
func ParseFallback(s string) (Fallback, error) {
	f := Fallback(s)
	if s == "default" {
		f = FallbackDefault
	}
	if !f.valid() {
		return "", fmt.Errorf("fallback %q: want direct, rewrite-from, defer or default", s)
	}
	return f, nil
}

// State is where an account stands.
type State string

const (
	// StateConnected: fetched and used for sending.
	StateConnected State = "connected"
	// StateDisconnected: an admin disconnected it; its token is gone,
	// its fetch cursor kept for a reconnect without duplicates.
	StateDisconnected State = "disconnected"
	// StateError: something needs an admin (typically Google revoked
	// the authorisation). Still one of our addresses for loop detection.
	StateError State = "error"
)

// Account is what `accounts list` and status pages show. It never holds
// the refresh token: that is reachable only through Store.RefreshToken.
type Account struct {
	Email        string    `json:"email"` // lower-cased
	Kind         Kind      `json:"kind"`
	State        State     `json:"state"`
	Warning      string    `json:"warning,omitempty"` // what the admin must do, in plain words
	LastError    string    `json:"last_error,omitempty"`
	ErrorAt      time.Time `json:"error_at,omitzero"`
	ConnectedAt  time.Time `json:"connected_at"`  // first connection
	ImportRecent int       `json:"import_recent"` // 0 or N (50): how much existing mail the first connect imports
	ImportDone   bool      `json:"import_done"`   // the initial import has run
	LastPoll     time.Time `json:"last_poll,omitzero"`
	Imported     int64     `json:"imported"` // mails turned into tickets or comments, all time
	Quarantined  int64     `json:"quarantined"`
	SendViaGmail bool      `json:"send_via_gmail"`     // so the mail lands in the account's Sent folder; new accounts start with true
	Fallback     Fallback  `json:"fallback,omitempty"` // when the relay cannot send via Gmail
	// Aliases are the account's "Send mail as" addresses, sorted: mail
	// From one goes via the account's Gmail, mail to one becomes tickets.
	Aliases []string `json:"aliases,omitempty"`
	// ThrottledUntil and ThrottleReason: Google asked us to stay away from
	// the account (too many connections, bandwidth, "try again later")
	// until then; both directions wait. See Throttle.
	ThrottledUntil time.Time `json:"throttled_until,omitzero"`
	ThrottleReason string    `json:"throttle_reason,omitempty"`
}

// Cursor is how far fetching got in one of the account's folders: INBOX
// (Cursor), or Sent (SentCursor).
type Cursor struct {
	UIDValidity uint32 `json:"uid_validity"`
	LastUID     uint32 `json:"last_uid"` // highest UID fully processed
}

var (
	// ErrNotFound: no account with that address was ever connected.
	ErrNotFound = errors.New("no such account")
	// ErrDisconnected: the account exists but was disconnected, so it has
	// no token and must not be put back into service by a late writer.
	ErrDisconnected = errors.New("account is disconnected")
)

// NormalizeEmail returns the bare, lower-cased address, or an error for
// anything else ("Name <a@b>", spaces, no domain). Gmail addresses are
// case-insensitive, and one spelling keeps one Redis key per mailbox.
func NormalizeEmail(s string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(s))
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" || strings.ContainsAny(e, " \t\r\n") {
		return "", fmt.Errorf("%q is not a bare email address such as support@example.com", s)
	}
	return e, nil
}

// parseAccount reads an account from its hash as HGETALL returns it.
func parseAccount(email string, h map[string]string) *Account {
	a := &Account{
		Email:          email,
		Kind:           Kind(h["kind"]),
		State:          State(h["state"]),
		Warning:        h["warning"],
		LastError:      h["last_error"],
		ErrorAt:        parseTime(h["error_at"]),
		ConnectedAt:    parseTime(h["connected_at"]),
		ImportDone:     h["import_done"] == "1",
		LastPoll:       parseTime(h["last_poll"]),
		SendViaGmail:   h["send_via_gmail"] == "1",
		Fallback:       Fallback(h["fallback"]),
		Aliases:        parseAliases(h["aliases"]),
		ThrottledUntil: parseTime(h["throttled_until"]),
		ThrottleReason: h["throttle_reason"],
	}
	a.ImportRecent, _ = strconv.Atoi(h["import_recent"])
	a.Imported, _ = strconv.ParseInt(h["imported"], 10, 64)
	a.Quarantined, _ = strconv.ParseInt(h["quarantined"], 10, 64)
	return a
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

func parseUint32(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}
