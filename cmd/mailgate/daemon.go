package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/imapfetch"
	"github.com/mailgate/mailgate/metrics"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
	"github.com/mailgate/mailgate/tickets"
	"github.com/mailgate/mailgate/tlsmode"
	"github.com/mailgate/mailgate/web"
)

// daemon is everything `serve` runs, built from the configuration.
type daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	rdb     redis.UniversalClient
	acc     *accounts.Store
	tickets *tickets.Store
	queue   *smtprelay.Queue // the relay's, also read by status and metrics
	tokens  *oauth.Registry  // shared by fetcher and relay
	fetcher *imapfetch.Fetcher
	smtp    *smtprelay.Server
	relay   *smtprelay.Relay
	// listeners, opened before anything runs so that a taken port fails
	// the start instead of a goroutine.
	relayL, relayTLSL, httpL net.Listener
	opts                     daemonOptions
	metrics                  *metrics.Metrics
	state                    *status.Sources
	web                      *web.Server
	serving                  atomic.Bool // the relay listeners are up (for /readyz)
}

// daemonOptions replace what the configuration cannot express, for the
// demo: where MX lookups go.
type daemonOptions struct {
	resolver smtprelay.Resolver // nil: the system's DNS
	mxPort   int                // 0: 25
	// reload reads the configuration again, for SIGHUP; nil: no reload.
	reload func() (*config.Config, error)
}

// newDaemon builds the daemon and opens its listeners; the startup checks
// that can only warn are logged here.
func newDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger, opts daemonOptions) (*daemon, error) {
	d := &daemon{cfg: cfg, log: log, opts: opts}
	var err error
	d.acc, d.rdb, err = openAccounts(ctx, cfg, true)
	if err != nil {
		return nil, err
	}
	d.tickets = newTicketStore(d.rdb, cfg, d.acc, log)
	dur := smtprelay.CheckDurability(ctx, d.rdb)
	if dur.Warning != "" {
		log.Warn("DURABILITY: " + dur.Warning)
	}
	d.queue = smtprelay.NewQueue(d.rdb, smtprelay.QueueOptions{Prefix: cfg.Redis.Prefix, WaitAOF: dur.WaitAOF})
	d.state = statusSources(cfg, d.rdb, d.acc, d.queue, d.tickets)
	d.metrics = metrics.New(metrics.Options{State: d.state, Logger: log})
	if d.tokens, err = newTokens(cfg, d.acc, log, d.metrics); err != nil {
		return nil, d.fail(err)
	}
	if d.fetcher, err = newFetcher(cfg, d.acc, d.tickets, d.tokens, log, d.metrics); err != nil {
		return nil, d.fail(err)
	}
	if err := d.buildRelay(ctx); err != nil {
		return nil, d.fail(err)
	}
	if err := d.buildWeb(); err != nil {
		return nil, d.fail(err)
	}
	return d, nil
}

func (d *daemon) fail(err error) error {
	d.close()
	return err
}

func (d *daemon) close() {
	for _, l := range []net.Listener{d.relayL, d.relayTLSL, d.httpL} {
		if l != nil {
			l.Close()
		}
	}
	if d.rdb != nil {
		d.rdb.Close()
	}
}

// reload applies what can change without a restart: the log level and who
// may use the relay. The rest (listeners, Redis, Google endpoints) needs a
// restart, and the log says so.
func (d *daemon) reloadConfig() {
	cfg, err := d.opts.reload()
	if err != nil {
		d.log.Error("reload: configuration refused, keeping the running one", "err", err)
		return
	}
	access, err := relayAccess(cfg)
	if err == nil {
		err = checkRelayExposure(d.cfg.Relay.Listen, d.cfg.Relay.TLSCert != "", len(access.Users) > 0, access.AllowedNetworks)
	}
	if err != nil {
		d.log.Error("reload: relay access refused, keeping the running one", "err", err)
		return
	}
	setLogLevel(cfg)
	d.smtp.SetAccess(access)
	d.log.Info("reload: applied log.level, relay.users, relay.allowed_networks and relay.allowed_senders; other changes need a restart")
}

// checkRelayExposure refuses to listen beyond loopback without TLS or
// without AUTH: passwords would cross the network in clear, or anyone on
// an allowed network could relay.
func checkRelayExposure(listen string, hasTLS, hasUsers bool, nets []netip.Prefix) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("relay.listen: %w", err)
	}
	if tlsmode.IsLoopback(host) {
		return nil
	}
	if hasUsers && !hasTLS {
		return errors.New("relay.listen: listening on " + listen + " with relay.users but no relay.tls_cert: passwords would travel in clear; add a certificate or listen on loopback")
	}
	for _, n := range nets {
		if n.Bits() == 0 {
			return errors.New("relay.allowed_networks: " + n.String() + " lets the whole Internet relay without AUTH: list the helpdesk's own addresses")
		}
	}
	return nil
}

// warnFallbacks says at startup which accounts' fallback cannot pass DMARC.
func (d *daemon) warnFallbacks(ctx context.Context, signer smtprelay.Signer) {
	all, err := d.acc.List(ctx)
	if err != nil {
		return
	}
	if len(all) == 0 {
		d.log.Warn("no Gmail account connected: nothing is fetched, and the relay accepts only tickets.support_addresses and relay.allowed_senders; connect one with `mailgate accounts connect EMAIL`")
	}
	canSign := func(domain string) bool { return signer != nil && signer.CanSign(domain) }
	for _, w := range fallbackWarnings(all, canSign, d.cfg.Relay.RewriteFromAddress) {
		d.log.Warn("fallback cannot pass DMARC: " + w)
	}
}

// fallbackWarnings lists the accounts whose mail, when it cannot go via
// Gmail, would leave unsigned for its From domain and so fail DMARC at
// receivers that enforce it.
func fallbackWarnings(all []*accounts.Account, canSign func(domain string) bool, rewriteFrom string) []string {
	var out []string
	for _, a := range all {
		domain := a.Email[strings.LastIndex(a.Email, "@")+1:]
		switch {
		case a.Fallback == accounts.FallbackDirect && !canSign(domain):
			out = append(out, fmt.Sprintf("%s: fallback direct, but no DKIM key for %s (mailgate dkim keygen), or choose rewrite-from/defer", a.Email, domain))
		case a.Fallback == accounts.FallbackRewriteFrom && rewriteFrom == "":
			out = append(out, fmt.Sprintf("%s: fallback rewrite-from needs relay.rewrite_from_address", a.Email))
		case a.Fallback == accounts.FallbackRewriteFrom && !canSign(rewriteFrom[strings.LastIndex(rewriteFrom, "@")+1:]):
			out = append(out, fmt.Sprintf("%s: fallback rewrite-from, but no DKIM key for the domain of relay.rewrite_from_address %s", a.Email, rewriteFrom))
		}
	}
	return out
}

// run starts everything and returns when ctx ends and all parts stopped.
func (d *daemon) run(ctx context.Context) error {
	defer d.close()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	start := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	start("fetcher", func() error { return d.fetcher.Run(ctx) })
	start("relay", func() error { return d.relay.Run(ctx) })
	start("smtp", func() error { return d.smtp.Serve(d.relayL) })
	if d.relayTLSL != nil {
		start("smtps", func() error { return d.smtp.ServeTLS(d.relayTLSL) })
	}
	d.serving.Store(true)
	httpDone := make(chan error, 1)
	go func() { httpDone <- d.web.Serve(d.httpL) }()
	d.log.Info("mailgate serving", "relay", d.relayL.Addr().String(), "http", d.httpL.Addr().String(),
		"imap", d.cfg.Google.IMAPAddr, "redis", redisWhere(d.cfg))
	hup := make(chan os.Signal, 1)
	if d.opts.reload != nil {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	var err error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err = <-errs:
			d.log.Error("mailgate: stopping after an error", "err", err)
			break wait
		case <-hup:
			d.reloadConfig()
		}
	}
	// Stop accepting; a transaction in DATA is finished and queued first.
	d.serving.Store(false) // /readyz turns 503 while draining
	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.ShutdownGrace.Duration())
	defer cancel()
	if serr := d.smtp.Shutdown(grace); serr != nil {
		d.log.Warn("smtp shutdown", "err", serr)
	}
	wg.Wait()
	// /metrics stays up until the fetchers and workers have finished.
	if werr := d.web.Shutdown(grace); werr != nil {
		d.log.Warn("http shutdown", "err", werr)
	}
	<-httpDone
	return err
}
