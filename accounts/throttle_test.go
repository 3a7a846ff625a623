package accounts

import (
	"context"
	"testing"
	"time"
)

// TestThrottleSeenByEveryReader: a throttle recorded through one store is
// read back by another (another process), shown with its time and reason,
// keeps the longer of two waits, and is gone once cleared or past.
func TestThrottleSeenByEveryReader(t *testing.T) {
	ctx := context.Background()
	s, rdb, c := newTestStore(t, Options{})
	mustConnect(t, s, Account{Email: "support@acme.example"}, token)
	other := New(rdb, Options{Box: s.opts.Box, Now: c.Now})

	now := c.Now()
	until := now.Add(75 * time.Minute)
	if err := s.SetThrottled(ctx, "support@acme.example", until, "command or bandwidth limit exceeded"); err != nil {
		t.Fatal(err)
	}
	// A shorter wait learnt later does not cut Google's longer one.
	if err := s.SetThrottled(ctx, "support@acme.example", now.Add(5*time.Minute), "too many simultaneous IMAP connections"); err != nil {
		t.Fatal(err)
	}
	a, err := other.Get(ctx, "support@acme.example")
	if err != nil {
		t.Fatal(err)
	}
	if want := "throttled by Google until 10:15 (command or bandwidth limit exceeded)"; a.ThrottleNote(now) != want {
		t.Errorf("ThrottleNote = %q, want %q", a.ThrottleNote(now), want)
	}
	if a.ThrottleNote(until.Add(time.Second)) != "" || a.Throttled(until) {
		t.Error("throttle still shown after its time passed")
	}
	// A success after an older throttle does not clear the one recorded
	// since by another connection.
	if err := other.ClearThrottled(ctx, "support@acme.example", now.Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if a, _ = s.Get(ctx, "support@acme.example"); !a.ThrottledUntil.Equal(until) {
		t.Errorf("a success seen against an older throttle cleared a later one: %+v", a)
	}
	if err := other.ClearThrottled(ctx, "support@acme.example", a.ThrottledUntil); err != nil {
		t.Fatal(err)
	}
	a, _ = s.Get(ctx, "support@acme.example")
	if a.Throttled(now) || a.ThrottleReason != "" {
		t.Errorf("after ClearThrottled: %+v, want no throttle", a)
	}
}
