package accounts

import (
	"context"
	"errors"
	"testing"
	"time"
)

// RenewLeases extends the caller's leases in one pipeline, takes the ones
// Redis lost, leaves another holder's alone, and still works after Redis
// forgot its scripts.
func TestRenewLeases(t *testing.T) {
	ctx := context.Background()
	s, rdb, _ := newTestStore(t, Options{})
	me, other := NewHolder("me"), NewHolder("other")
	mustLease(t, "me on a", s, "a@example.com", me, time.Second, true)
	mustLease(t, "other on b", s, "b@example.com", other, time.Minute, true)
	// c@example.com has no lease: Redis lost it.

	for _, flush := range []bool{false, true} {
		if flush {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.RenewLeases(ctx, []string{"a@example.com", "B@example.com", "c@example.com"}, me, time.Hour)
		if err != nil {
			t.Fatalf("RenewLeases (scripts flushed %v) = %v", flush, err)
		}
		if len(got) != 3 || !got[0].Mine || got[1].Mine || got[1].Holder != other || !got[2].Mine {
			t.Fatalf("RenewLeases (scripts flushed %v) = %+v, want a and c mine, b other's", flush, got)
		}
	}
	if ttl := rdb.PTTL(ctx, s.leaseKey("a@example.com")).Val(); ttl < 59*time.Minute {
		t.Errorf("a's lease runs out in %s after a renewal for an hour", ttl)
	}
	if v := rdb.Get(ctx, s.leaseKey("b@example.com")).Val(); v != other.String() {
		t.Errorf("b's lease holds %q, want the other holder's", v)
	}
}

// RecordPolls sets each account's last poll in one pipeline, as RecordPoll
// with nothing imported does, skips an account that is gone, and still
// works after Redis forgot its scripts.
func TestRecordPolls(t *testing.T) {
	ctx := context.Background()
	s, rdb, clk := newTestStore(t, Options{})
	mustConnect(t, s, Account{Email: "a@example.com"}, "1//token")
	mustConnect(t, s, Account{Email: "b@example.com"}, "1//token")
	if err := s.RecordPoll(ctx, "a@example.com", 3); err != nil {
		t.Fatal(err)
	}
	for _, flush := range []bool{false, true} {
		clk.Add(time.Minute)
		if flush {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.RecordPolls(ctx, []string{"a@example.com", "gone@example.com", "B@example.com"}); err != nil {
			t.Fatalf("RecordPolls (scripts flushed %v) = %v", flush, err)
		}
		for _, e := range []string{"a@example.com", "b@example.com"} {
			a, err := s.Get(ctx, e)
			if err != nil {
				t.Fatal(err)
			}
			if !a.LastPoll.Equal(clk.Now()) {
				t.Errorf("%s: LastPoll = %s, want %s (scripts flushed %v)", e, a.LastPoll, clk.Now(), flush)
			}
		}
	}
	if a, _ := s.Get(ctx, "a@example.com"); a.Imported != 3 {
		t.Errorf("Imported = %d after polls that imported nothing, want the 3 recorded before", a.Imported)
	}
	if _, err := s.Get(ctx, "gone@example.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(gone) = %v, want ErrNotFound: RecordPolls must not create accounts", err)
	}
}
