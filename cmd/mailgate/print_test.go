package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/smtprelay"
)

func TestQuotaColumn(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	quota := smtprelay.NewQuota(smtprelay.NewQueue(rdb, smtprelay.QueueOptions{}))
	ten := func(accounts.Kind) sendlimit.Limits { return sendlimit.Limits{Messages: 10} }
	defaults := relayLimits(config.Defaults())
	send := func(account string, n int, limits func(accounts.Kind) sendlimit.Limits) {
		t.Helper()
		for i := range n {
			if _, err := quota.Reserve(ctx, account, fmt.Sprintf("m%d", i), 1, 0, limits(accounts.KindGmail), 0.9); err != nil {
				t.Fatal(err)
			}
		}
	}
	send("three@gmail.com", 3, ten)
	send("full@gmail.com", 12, ten) // the last two are refused
	send("one@example.com", 1, defaults)
	send("old@gmail.com", 3, ten)
	// A window counted by a relay from before the applied limit was kept.
	if keys, err := rdb.Keys(ctx, "*relay:quota:old@gmail.com:limit").Result(); err != nil || len(keys) != 1 {
		t.Fatalf("limit key: %q, %v", keys, err)
	} else if err := rdb.Del(ctx, keys[0]).Err(); err != nil {
		t.Fatal(err)
	}
	send("busy@gmail.com", 312, defaults)
	if err := quota.Block(ctx, "blocked@gmail.com"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		email  string
		limits func(accounts.Kind) sendlimit.Limits
		want   string
	}{
		{"three@gmail.com", ten, "[###-------] 3/10"},
		{"full@gmail.com", ten, "[##########] 10/10"},
		{"idle@gmail.com", defaults, "[----------] 0/500"},
		{"one@example.com", defaults, "[#---------] 1/500"},
		{"busy@gmail.com", defaults, "[######----] 312/500"},
		{"blocked@gmail.com", ten, "[----------] 0/10 BLOCKED by Gmail"},
		// The limit the relay applied wins over the reader's own.
		{"three@gmail.com", defaults, "[###-------] 3/10"},
		{"old@gmail.com", defaults, "[#---------] 3/500"},
		{"old@gmail.com", func(accounts.Kind) sendlimit.Limits { return sendlimit.Limits{} }, "3 sent (no limit)"},
	} {
		if got := quotaColumn(ctx, quota, &accounts.Account{Email: tc.email, Kind: accounts.KindGmail}, tc.limits); got != tc.want {
			t.Errorf("quotaColumn(%s) = %q, want %q", tc.email, got, tc.want)
		}
	}
	// Workspace accounts get the workspace limit.
	ws := &accounts.Account{Email: "idle@example.com", Kind: accounts.KindWorkspace}
	if got := quotaColumn(ctx, quota, ws, defaults); got != "[----------] 0/2000" {
		t.Errorf("quotaColumn(workspace) = %q", got)
	}
}

func TestQueueAges(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 45 * time.Second: "45s", 90 * time.Second: "1m", 3*time.Hour + 5*time.Minute: "3h05m", 52 * time.Hour: "2d04h",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
