package main

import (
	"log/slog"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/metrics"
	"github.com/mailgate/mailgate/oauth"
)

// newTokens builds the process's one token registry: the fetcher and the
// relay both take access tokens from it, so a refresh token Google rotates
// for one is the one the other uses next, and a revoked grant warns the
// admin once. m, when not nil, counts the refreshes (serve).
func newTokens(cfg *config.Config, acc *accounts.Store, log *slog.Logger, m *metrics.Metrics) (*oauth.Registry, error) {
	_, httpClient, err := googleClients(cfg)
	if err != nil {
		return nil, err
	}
	opts := oauth.RegistryOptions{Load: acc.RefreshToken, Save: acc.SaveRefreshToken,
		MarkNeedsReconnect: acc.MarkNeedsReconnect, HTTPClient: httpClient, Logger: log}
	if m != nil {
		opts.OnRefresh = m.TokenRefresh
	}
	return oauth.NewRegistry(googleOAuth(cfg), opts), nil
}
