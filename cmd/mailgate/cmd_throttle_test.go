package main

import (
	"context"
	"testing"
	"time"
)

// TestAccountsListShowsThrottle: `accounts list` shows an account Gmail
// throttles as "throttled by Google until HH:MM (reason)".
func TestAccountsListShowsThrottle(t *testing.T) {
	e := newAccountsEnv(t)
	e.addAccount("alice@example.com", 0)
	until := time.Now().Add(45 * time.Minute)
	if err := e.store().SetThrottled(context.Background(), "alice@example.com", until, "too many simultaneous IMAP connections"); err != nil {
		t.Fatal(err)
	}
	wantOutput(t, "accounts list", e.mustRun("accounts", "list"),
		"alice@example.com", "throttled by Google until "+until.Local().Format("15:04")+" (too many simultaneous IMAP connections)")
}
