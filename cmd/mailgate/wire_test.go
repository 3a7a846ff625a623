package main

import (
	"testing"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/redisconn"
	"github.com/mailgate/mailgate/sendlimit"
)

func TestRelayLimits(t *testing.T) {
	cfg := config.Defaults()
	limits := relayLimits(cfg)
	if got, want := limits(accounts.KindGmail), (sendlimit.Limits{Messages: 500, PerMessageRcpt: 100}); got != want {
		t.Errorf("gmail limits = %+v, want %+v", got, want)
	}
	if got, want := limits(accounts.KindWorkspace), (sendlimit.Limits{Messages: 2000, Recipients: 10000, External: 3000, PerMessageRcpt: 100}); got != want {
		t.Errorf("workspace limits = %+v, want %+v", got, want)
	}
	// Defaults agree with the relay's own idea of Google's limits.
	for _, k := range []accounts.Kind{accounts.KindGmail, accounts.KindWorkspace} {
		if limits(k) != k.DefaultLimits() {
			t.Errorf("%s: config defaults %+v differ from accounts.Kind.DefaultLimits %+v", k, limits(k), k.DefaultLimits())
		}
	}
	cfg.Relay.GmailDailyLimit = 10
	if got := relayLimits(cfg)(accounts.KindGmail).Messages; got != 10 {
		t.Errorf("relay.gmail_daily_limit=10 gives %d", got)
	}
}

// TestDefaultRedisURL: the consumer example's default (redisconn's) is
// mailgate's own.
func TestDefaultRedisURL(t *testing.T) {
	if got := config.Defaults().Redis.URL; got != redisconn.DefaultURL {
		t.Errorf("config's default redis.url %q differs from redisconn.DefaultURL %q", got, redisconn.DefaultURL)
	}
}
