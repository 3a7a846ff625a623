package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/imapfetch"
	"github.com/mailgate/mailgate/metrics"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
	"github.com/mailgate/mailgate/tickets"
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
	names    config.SystemNames // how the machine's name is found; zero: the system's
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
		// The new access lists against the listeners and TLS still
		// running: those change only with a restart.
		r := cfg.Relay
		r.Listen, r.ListenTLS, r.TLSCert, r.TLSKey = d.cfg.Relay.Listen, d.cfg.Relay.ListenTLS, d.cfg.Relay.TLSCert, d.cfg.Relay.TLSKey
		err = r.CheckExposure()
	}
	if err != nil {
		d.log.Error("reload: relay access refused, keeping the running one", "err", err)
		return
	}
	setLogLevel(cfg)
	d.smtp.SetAccess(access)
	d.log.Info("reload: applied log.level, relay.users, relay.allowed_networks and relay.allowed_senders; other changes need a restart")
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

// stopMargin is how long past shutdown_grace the daemon waits for parts
// that were cut at the grace to return.
const stopMargin = 2 * time.Second

// run starts every part and returns once they have all stopped, within
// shutdown_grace of ctx ending (a signal: nil) or of one part failing
// (that failure, naming the part, so that serve exits non-zero and
// systemd restarts the whole daemon rather than leave it without a part).
func (d *daemon) run(ctx context.Context) error {
	defer d.close()
	p := newParts(ctx)
	p.start("fetcher", d.fetcher.Run)
	p.start("relay", d.relay.Run)
	p.start("smtp", func(context.Context) error { return d.smtp.Serve(d.relayL) })
	if d.relayTLSL != nil {
		p.start("smtps", func(context.Context) error { return d.smtp.ServeTLS(d.relayTLSL) })
	}
	p.start("http", func(context.Context) error { return d.web.Serve(d.httpL) })
	d.serving.Store(true)
	d.log.Info("mailgate serving", "relay", d.relayL.Addr().String(), "http", d.httpL.Addr().String(),
		"imap", d.cfg.Google.IMAPAddr, "redis", redisWhere(d.cfg))
	hup := make(chan os.Signal, 1)
	if d.opts.reload != nil {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
wait:
	for {
		select {
		case <-p.ctx.Done():
			break wait
		case <-hup:
			d.reloadConfig()
		}
	}
	failed := p.failure()
	if failed != nil {
		d.log.Error("mailgate: a part stopped; stopping the others and exiting, to be restarted whole", "err", failed)
	}
	// Stop accepting; a transaction in DATA is finished and queued first.
	d.serving.Store(false) // /readyz turns 503 while draining
	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.ShutdownGrace.Duration())
	defer cancel()
	// The parts bound their own work by shutdown_grace, then need a moment
	// to record that they were cut (a delivery cut at the grace is marked
	// for another process to take over at once); past that, the exit cuts
	// whatever is left.
	last, cancelLast := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.ShutdownGrace.Duration()+stopMargin)
	defer cancelLast()
	if serr := d.smtp.Shutdown(grace); serr != nil && !errors.Is(serr, net.ErrClosed) {
		d.log.Warn("smtp shutdown", "err", serr)
	}
	// /metrics stays up until the fetchers and workers have finished.
	werr := p.wait(last, "fetcher", "relay")
	if herr := d.web.Shutdown(grace); herr != nil {
		d.log.Warn("http shutdown", "err", herr)
	}
	if werr == nil {
		werr = p.wait(last)
	}
	if werr != nil {
		// A mail being ingested is still unread in Gmail, a message being
		// delivered still pending: the next start takes them up.
		d.log.Error("mailgate: exiting with parts not stopped", "err", werr)
	}
	return failed
}
