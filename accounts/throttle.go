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

// SetThrottled records that Google asked us to leave the account alone
// until then, and why. Every process reads it before using the account's
// IMAP or SMTP, so one throttled connection holds back all of them. An
// earlier time than the one recorded is ignored: the longer wait Google
// asked for stands.
func (s *Store) SetThrottled(ctx context.Context, email string, until time.Time, reason string) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	cur, err := s.rdb.HGet(ctx, s.accountKey(e), "throttled_until").Result()
	if err == nil && parseTime(cur).After(until) {
		return nil
	}
	err = s.update(ctx, e, "live", true, update{set: []string{
		"throttled_until", until.UTC().Format(time.RFC3339Nano), "throttle_reason", reason, "updated_at", s.now(),
	}})
	if err != nil {
		return fmt.Errorf("throttle %s: %w", e, err)
	}
	return nil
}

// ClearThrottled forgets the account's throttling: Gmail took a login or a
// message again.
func (s *Store) ClearThrottled(ctx context.Context, email string) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	if err := s.update(ctx, e, "exists", true, update{del: []string{"throttled_until", "throttle_reason"}}); err != nil {
		return fmt.Errorf("clear throttle of %s: %w", e, err)
	}
	return nil
}
