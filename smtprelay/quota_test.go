package smtprelay

import (
	"context"
	"testing"

	"github.com/mailgate/mailgate/sendlimit"
)

// TestQuotaReleaseGivesBackOnlyItsMessage: a released reservation frees its
// message and its recipients (external ones too), and only those.
func TestQuotaReleaseGivesBackOnlyItsMessage(t *testing.T) {
	q, _ := newTestQueue(t)
	quota := NewQuota(q)
	ctx := context.Background()
	l := sendlimit.Limits{Messages: 10, Recipients: 100, External: 100}
	for _, id := range []string{"keep", "drop"} {
		if res, err := quota.Reserve(ctx, "a@acme.test", id, 3, 2, l, 0.9); err != nil || !res.ok {
			t.Fatalf("Reserve(%s) = %+v, %v; want ok", id, res, err)
		}
	}
	quota.Release(ctx, "a@acme.test", "drop", 3)
	for key, want := range map[string]int64{
		quota.sentKey("a@acme.test"): 1, quota.rcptKey("a@acme.test"): 3, quota.extKey("a@acme.test"): 2,
	} {
		if n := q.rdb.ZCard(ctx, key).Val(); n != want {
			t.Errorf("ZCARD %s = %d after Release, want %d", key, n, want)
		}
	}
}
