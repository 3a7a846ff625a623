package main

import (
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/smtprelay"
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

func TestRelayTimeouts(t *testing.T) {
	cfg := config.Defaults()
	// The defaults in the example file are the relay's own.
	if got := relayTimeouts(cfg); got != smtprelay.DefaultTimeouts {
		t.Errorf("config defaults give %+v, want smtprelay.DefaultTimeouts %+v", got, smtprelay.DefaultTimeouts)
	}
	cfg.Relay.DataTimeout = config.Duration(3 * time.Minute)
	if got := relayTimeouts(cfg).Data; got != 3*time.Minute {
		t.Errorf("relay.data_timeout=3m gives %v", got)
	}
}
