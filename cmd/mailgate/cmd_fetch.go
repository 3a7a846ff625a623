package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/imapfetch"
	"github.com/mailgate/mailgate/metrics"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tickets"
)

func fetchCommand() *cli.Command {
	return &cli.Command{
		Name:      "fetch",
		Usage:     "poll connected accounts once and turn new mail into tickets (serve does this continuously)",
		ArgsUsage: "[EMAIL]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "once", Value: true, Usage: "poll once and exit (the only mode: run `serve` to keep fetching)"},
		},
		Action: fetchOnce,
	}
}

func fetchOnce(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	acc, rdb, err := openAccounts(c.Context, cfg, true)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st := newTicketStore(rdb, cfg, acc, slog.Default())
	tokens, err := newTokens(cfg, acc, slog.Default(), nil)
	if err != nil {
		return err
	}
	f, err := newFetcher(cfg, acc, st, tokens, slog.Default(), nil)
	if err != nil {
		return err
	}
	emails := c.Args().Slice()
	if len(emails) == 0 {
		all, err := acc.List(c.Context)
		if err != nil {
			return err
		}
		for _, a := range all {
			if a.State == accounts.StateConnected {
				emails = append(emails, a.Email)
			}
		}
		if len(emails) == 0 {
			return cli.Exit("no connected account: connect one with `mailgate accounts connect EMAIL`", 1)
		}
	}
	w := c.App.Writer
	failed := 0
	for _, email := range emails {
		progress := func(done, total int) {
			fmt.Fprintf(w, "\r%s: %d/%d mails", email, done, total)
			if done == total {
				fmt.Fprintln(w)
			}
		}
		r, err := f.PollOnce(c.Context, email, progress)
		switch {
		case errors.Is(err, imapfetch.ErrLeaseHeld):
			fmt.Fprintf(w, "%s: a running `mailgate serve` is fetching this account; nothing to do here\n", email)
		case err != nil:
			fmt.Fprintf(c.App.ErrWriter, "%s: %v\n", email, err)
			failed++
		default:
			fmt.Fprintf(w, "%s: %d fetched, %d new tickets, %d comments, %d already imported, %d not tickets (loops, auto-replies, bounces), %d quarantined, %d to retry\n",
				email, r.Fetched, r.Created, r.Comments, r.Duplicates, r.Suppressed, r.Quarantined, r.Errors)
		}
	}
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("%d of %d accounts failed", failed, len(emails)), 1)
	}
	return nil
}

// newFetcher builds the IMAP fetcher from the google and fetch sections,
// taking access tokens from tokens. m, when not nil, receives the
// fetchers' metrics (serve).
func newFetcher(cfg *config.Config, acc *accounts.Store, st *tickets.Store, tokens *oauth.Registry, log *slog.Logger, m *metrics.Metrics) (*imapfetch.Fetcher, error) {
	tlsCfg, _, err := googleClients(cfg)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	o := imapfetch.Options{
		IMAPAddr:     cfg.Google.IMAPAddr,
		TLSMode:      cfg.Google.IMAPTLS,
		TLSConfig:    tlsCfg,
		PollInterval: cfg.Fetch.PollInterval.Duration(),
		IdleRestart:  cfg.Fetch.IDLERestart.Duration(),
		LeaseTTL:     cfg.Fetch.LeaseTTL.Duration(),
		BackoffMax:   cfg.Fetch.BackoffMax.Duration(),
		IDLE:         cfg.Fetch.IDLE,
		MaxAttempts:  cfg.Fetch.MaxAttempts,
		BatchSize:    cfg.Fetch.BatchSize,
		Tokens:       tokens,
		Holder:       fmt.Sprintf("%s:%d", host, os.Getpid()),
		Logger:       log,
	}
	if m != nil {
		o.OnPoll, o.OnSuppressed = m.Poll, m.Suppressed
	}
	return imapfetch.New(acc, st, o), nil
}

// googleClients returns the TLS config for Google's IMAP and SMTP (nil:
// the system's roots) and the HTTP client for its OAuth endpoints, both
// trusting google.ca_file when it is set.
func googleClients(cfg *config.Config) (*tls.Config, *http.Client, error) {
	tlsCfg, err := clientTLS(cfg.Google.CAFile)
	if err != nil || tlsCfg == nil {
		return nil, http.DefaultClient, err
	}
	return tlsCfg, &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}, nil
}

// clientTLS returns a TLS config trusting google.ca_file on top of the
// system roots, or nil when no CA file is configured.
func clientTLS(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("google.ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("google.ca_file: %s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
