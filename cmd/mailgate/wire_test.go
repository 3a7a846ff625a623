package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/redisconn"
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

// The relay.auth_* keys reach the relay's limits on password guessing.
func TestRelayAuthLimits(t *testing.T) {
	cfg := config.Defaults()
	if got, want := relayAuthLimits(cfg.Relay), (smtprelay.AuthLimits{MaxFailures: 3, FailureDelay: time.Second, Budget: 10, Lockout: 15 * time.Minute}); got != want {
		t.Errorf("default auth limits = %+v, want %+v", got, want)
	}
	cfg.Relay.AuthLockout = config.Duration(time.Hour)
	cfg.Relay.AuthConcurrentChecks = 4
	if got := relayAuthLimits(cfg.Relay); got.Lockout != time.Hour || got.Checks != 4 {
		t.Errorf("relay.auth_lockout=1h, auth_concurrent_checks=4 give %+v", got)
	}
}

// A refused refresh reaches Google once: with the auth style left to
// x/oauth2's guess, an invalid_grant answer to Basic auth is retried with
// the credentials in the form, which doubles every failing request.
func TestGoogleOAuthAsksOncePerRefusedRefresh(t *testing.T) {
	google := fakeoauth.New()
	defer google.Close()
	cfg := config.Defaults()
	cfg.Google.ClientID, cfg.Google.ClientSecret = fakeoauth.ClientID, fakeoauth.ClientSecret
	cfg.Google.AuthURL, cfg.Google.TokenURL = google.URL+"/auth", google.URL+"/token"

	refresh := google.IssueRefreshToken("a@example.com")
	google.Revoke(refresh)
	_, err := oauth.NewSource(googleOAuth(cfg), refresh, nil).Token(context.Background())
	if !errors.Is(err, oauth.ErrInvalidGrant) {
		t.Fatalf("Token() with a revoked grant = %v, want ErrInvalidGrant", err)
	}
	if n := google.TokenRequests(); n != 1 {
		t.Errorf("token endpoint asked %d times for one refused refresh, want 1", n)
	}
}

// TestDefaultRedisURL: the consumer example's default (redisconn's) is
// mailgate's own.
func TestDefaultRedisURL(t *testing.T) {
	if got := config.Defaults().Redis.URL; got != redisconn.DefaultURL {
		t.Errorf("config's default redis.url %q differs from redisconn.DefaultURL %q", got, redisconn.DefaultURL)
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
