package accounts

import (
	"context"
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
