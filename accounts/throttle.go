package accounts

import (
	"context"
	"fmt"
	"time"
)

// Throttled reports whether Google's last throttling of the account is
// still in force at now.
func (a *Account) Throttled(now time.Time) bool {
	return now.Before(a.ThrottledUntil)
}

// ThrottleNote is what `accounts list`, `status` and the console show for
// a throttled account: "throttled by Google until 15:04 (reason)", the time
// in now's zone; "" once the time has passed.
func (a *Account) ThrottleNote(now time.Time) string {
	if !a.Throttled(now) {
		return ""
	}
	until := a.ThrottledUntil.In(now.Location())
	layout := "15:04"
	if until.Sub(now) >= 24*time.Hour || until.YearDay() != now.YearDay() {
		layout = "Jan 2 15:04"
	}
	note := "throttled by Google until " + until.Format(layout)
	if a.ThrottleReason != "" {
		note += " (" + a.ThrottleReason + ")"
	}
	return note
}

// throttleLayout writes throttled_until at a fixed width in UTC, so that
// update.lua can compare two of them as strings.
const throttleLayout = "2006-01-02T15:04:05.000000000Z07:00"

// SetThrottled records that Google asked us to leave the account alone
// until then, and why. Every process reads it before using the account's
// IMAP or SMTP, so one throttled connection holds back all of them. An
// earlier time than the one recorded is ignored, in the same script that
// writes: the longer wait Google asked for stands, whichever process
// records last.
func (s *Store) SetThrottled(ctx context.Context, email string, until time.Time, reason string) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	at := until.UTC().Format(throttleLayout)
	err = s.update(ctx, e, "live", true, update{
		set:     []string{"throttled_until", at, "throttle_reason", reason, "updated_at", s.now()},
		ifField: "throttled_until", ifAtMost: at,
	})
	if err != nil {
		return fmt.Errorf("throttle %s: %w", e, err)
	}
	return nil
}

// ClearThrottled forgets the account's throttling once Gmail took a login
// or a message again. seen is the throttle the caller saw before that
// success: a later one, recorded meanwhile by another connection, stays.
func (s *Store) ClearThrottled(ctx context.Context, email string, seen time.Time) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	err = s.update(ctx, e, "exists", true, update{
		del:     []string{"throttled_until", "throttle_reason"},
		ifField: "throttled_until", ifAtMost: seen.UTC().Format(throttleLayout),
	})
	if err != nil {
		return fmt.Errorf("clear throttle of %s: %w", e, err)
	}
	return nil
}
