package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/redisconn"
)

// connectTimeout bounds each probe of `config check --connect`.
const connectTimeout = 5 * time.Second

// checkConnect tries every server the configuration names (Redis, Gmail's
// IMAP and SMTP hosts, the OAuth token endpoint) and prints one line for
// each saying what answered. It fails when any did not answer.
func checkConnect(ctx context.Context, w io.Writer, cfg *config.Config) error {
	_, httpClient, err := googleClients(cfg)
	if err != nil {
		return err
	}
	probes := []struct {
		key, where string
		try        func(context.Context) (string, error)
	}{
		{"redis.url", redisWhere(cfg), func(ctx context.Context) (string, error) { return pingRedis(ctx, cfg) }},
		{"google.imap_addr", cfg.Google.IMAPAddr, func(ctx context.Context) (string, error) { return dialTCP(ctx, cfg.Google.IMAPAddr) }},
		{"google.smtp_addr", cfg.Google.SMTPAddr, func(ctx context.Context) (string, error) { return dialTCP(ctx, cfg.Google.SMTPAddr) }},
		{"google.token_url", cfg.Google.TokenURL, func(ctx context.Context) (string, error) {
			return tryHTTP(ctx, httpClient, cfg.Google.TokenURL)
		}},
	}
	var failed []string
	for _, p := range probes {
		pctx, cancel := context.WithTimeout(ctx, connectTimeout)
		what, err := p.try(pctx)
		cancel()
		if err != nil {
			failed = append(failed, p.key)
			fmt.Fprintf(w, "# %-17s %s: no answer: %v\n", p.key, p.where, err)
			continue
		}
		fmt.Fprintf(w, "# %-17s %s: %s\n", p.key, p.where, what)
	}
	if len(failed) > 0 {
		return fmt.Errorf("no answer from %s", strings.Join(failed, ", "))
	}
	return nil
}

func pingRedis(ctx context.Context, cfg *config.Config) (string, error) {
	rdb, err := redisconn.New(redisOptions(cfg))
	if err != nil {
		return "", err
	}
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return "", err
	}
	return "answered PING", nil
}

func dialTCP(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	conn.Close()
	return "accepted a TCP connection", nil
}

// tryHTTP posts an empty form to the token endpoint: any HTTP answer (a
// 400 for the missing grant is the expected one) shows it is reachable.
func tryHTTP(ctx context.Context, client *http.Client, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(url.Values{}.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", err
	}
	resp.Body.Close()
	return "answered HTTP " + resp.Status, nil
}
