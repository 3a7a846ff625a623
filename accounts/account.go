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
	"strings"
	"time"
)

// Kind is the type of Google account; it decides the daily sending limit
// the relay applies (seed G11).
type Kind string

const (
	KindGmail     Kind = "gmail"     // consumer Gmail: 500 messages a day
	KindWorkspace Kind = "workspace" // Google Workspace: 2,000 messages a day
)

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

// State is where an account stands.
type State string

const (
	// StateConnected: fetched and used for sending.
	StateConnected State = "connected"
	// StateDisconnected: an admin disconnected it (G14); its token is
	// gone, its fetch cursor kept for a reconnect without duplicates.
	StateDisconnected State = "disconnected"
	// StateError: something needs an admin (typically the authorisation
	// was revoked, G15). Still one of our addresses for loop detection.
	StateError State = "error"
)

// Account is what `accounts list` and status pages show. It never holds
// the refresh token: that is reachable only through Store.RefreshToken.
type Account struct {
	Email        string    `json:"email"` // lower-cased
	Kind         Kind      `json:"kind"`
	State        State     `json:"state"`
	Warning      string    `json:"warning,omitempty"` // human text for the admin (G15)
	LastError    string    `json:"last_error,omitempty"`
	ErrorAt      time.Time `json:"error_at,omitzero"`
	ConnectedAt  time.Time `json:"connected_at"`  // first connection
	ImportRecent int       `json:"import_recent"` // 0 or N (50): the choice made at first connect (G4)
	ImportDone   bool      `json:"import_done"`   // the initial import has run
	LastPoll     time.Time `json:"last_poll,omitzero"`
	Imported     int64     `json:"imported"` // mails turned into tickets or comments, all time
	Quarantined  int64     `json:"quarantined"`
	SendViaGmail bool      `json:"send_via_gmail"`     // G8; new accounts start with true
	Fallback     string    `json:"fallback,omitempty"` // direct|rewrite-from|defer (relay)
}

// Cursor is how far fetching got in the account's INBOX.
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
