package main

import (
	"context"
	"crypto/tls"
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
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/imapfetch"
	"github.com/mailgate/mailgate/metrics"
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
	if d.fetcher, err = newFetcher(cfg, d.acc, d.tickets, log, d.metrics); err != nil {
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

// buildWeb prepares the HTTP endpoints: health, readiness, metrics, status.
func (d *daemon) buildWeb() error {
	d.web = web.New(web.Options{
		Ready: func(ctx context.Context) error {
			if err := d.rdb.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("redis: %w", err)
			}
			if !d.serving.Load() {
				return errors.New("relay listeners not serving (starting or shutting down)")
			}
			return nil
		},
		Status:   func(ctx context.Context) (any, error) { return d.state.Gather(ctx) },
		Registry: d.metrics.Registry(),
		Logger:   d.log,
	})
	var err error
	if d.httpL, err = net.Listen("tcp", d.cfg.HTTP.Listen); err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	if ap, err := netip.ParseAddrPort(d.httpL.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
		d.log.Warn("http.listen is not loopback: /status shows account addresses and errors without authentication; put it behind a proxy or firewall", "listen", d.cfg.HTTP.Listen)
	}
	return nil
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

func (d *daemon) buildRelay(ctx context.Context) error {
	cfg, log, q := d.cfg, d.log, d.queue
	hostname := cfg.Relay.Hostname
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	access, err := relayAccess(cfg)
	if err != nil {
		return err
	}
	users, nets := access.Users, access.AllowedNetworks
	var serverTLS *tls.Config
	if cfg.Relay.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.Relay.TLSCert, cfg.Relay.TLSKey)
		if err != nil {
			return fmt.Errorf("relay.tls_cert/relay.tls_key: %w", err)
		}
		serverTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if err := checkRelayExposure(cfg.Relay.Listen, serverTLS != nil, len(users) > 0, nets); err != nil {
		return err
	}
	st := d.tickets
	d.smtp = smtprelay.NewServer(q, smtprelay.ServerOptions{
		Hostname: hostname, Users: users, AllowedNetworks: nets, AllowedSenders: cfg.Relay.AllowedSenders,
		SupportAddresses: d.acc.SupportAddresses, MaxRecipients: cfg.Relay.MaxRecipients,
		MaxMessageBytes: cfg.Relay.MaxMessageBytes, TLS: serverTLS, Logger: log, OnAccept: d.metrics.RelayAccept,
		// The customer's reply to this notification must thread onto its
		// ticket: register its Message-ID as soon as it is accepted.
		Accepted: func(ctx context.Context, m *smtprelay.Message) {
			if m.Ticket == 0 || m.MessageID == "" {
				return
			}
			if err := st.RegisterOutbound(ctx, m.Ticket, m.MessageID); err != nil {
				log.Warn("relay: cannot register the notification's Message-ID", "ticket", m.Ticket, "queue_id", m.ID, "err", err)
			}
		},
	})

	keys, err := loadDKIMKeys(cfg)
	if err != nil {
		return err
	}
	var signer smtprelay.Signer
	if len(keys) > 0 {
		s, err := dkim.NewSigner(keys)
		if err != nil {
			return fmt.Errorf("dkim.keys: %w", err)
		}
		signer = s
	}
	clientTLSCfg, httpClient, err := googleClients(cfg)
	if err != nil {
		return err
	}
	var resolver smtprelay.Resolver = net.DefaultResolver
	if d.opts.resolver != nil {
		resolver = d.opts.resolver
	}
	d.relay = smtprelay.NewRelay(q, d.acc, smtprelay.RelayOptions{
		Hostname: hostname,
		Gmail: smtprelay.GmailOptions{Addr: cfg.Google.SMTPAddr, TLSMode: cfg.Google.SMTPTLS, TLS: clientTLSCfg,
			OAuth: googleOAuth(cfg), HTTPClient: httpClient},
		Direct: smtprelay.DirectOptions{Resolver: resolver, Port: d.opts.mxPort, TLS: clientTLSCfg, Smarthost: cfg.Relay.Smarthost,
			SmarthostUser: cfg.Relay.SmarthostUser, SmarthostPassword: cfg.Relay.SmarthostPassword,
			SmarthostTLS: smarthostTLS(cfg)},
		Signer:        signer,
		Limits:        relayLimits(cfg),
		WarnAt:        cfg.Relay.QuotaWarnAt,
		RetrySchedule: durations(cfg.Relay.RetrySchedule),
		MaxLifetime:   cfg.Relay.MaxQueueLifetime.Duration(),
		RewriteFrom:   cfg.Relay.RewriteFromAddress,
		Workers:       cfg.Relay.Workers,
		Consumer:      fmt.Sprintf("%s:%d", hostname, os.Getpid()),
		ShutdownGrace: cfg.ShutdownGrace.Duration(),
		Publish: func(ctx context.Context, typ tickets.EventType, ticket int64, data any) {
			if err := st.Publish(ctx, typ, ticket, data); err != nil {
				log.Warn("cannot publish event", "type", typ, "err", err)
			}
		},
		Logger:         log,
		OnDelivery:     d.metrics.Delivery,
		OnTokenRefresh: d.metrics.TokenRefresh(metrics.DirectionSMTP),
	})
	d.warnFallbacks(ctx, signer)

	if d.relayL, err = net.Listen("tcp", cfg.Relay.Listen); err != nil {
		return fmt.Errorf("relay.listen: %w", err)
	}
	if cfg.Relay.ListenTLS != "" {
		if d.relayTLSL, err = net.Listen("tcp", cfg.Relay.ListenTLS); err != nil {
			return fmt.Errorf("relay.listen_tls: %w", err)
		}
	}
	return nil
}

// statusSources is where /status, /metrics and `mailgate status` read:
// the same picture from any process.
func statusSources(cfg *config.Config, rdb redis.UniversalClient, acc *accounts.Store, q *smtprelay.Queue, ts *tickets.Store) *status.Sources {
	return &status.Sources{Accounts: acc, Queue: q, Quota: smtprelay.NewQuota(q), Limits: relayLimits(cfg),
		Events: rdb, EventsKey: ts.Key("events")}
}

// relayAccess is who may use the relay, from the relay section.
func relayAccess(cfg *config.Config) (smtprelay.Access, error) {
	a := smtprelay.Access{Users: map[string]string{}, AllowedSenders: cfg.Relay.AllowedSenders}
	for _, n := range cfg.Relay.AllowedNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return a, fmt.Errorf("relay.allowed_networks: %w", err)
		}
		a.AllowedNetworks = append(a.AllowedNetworks, p)
	}
	for _, u := range cfg.Relay.Users {
		a.Users[u.Name] = u.PasswordHash
	}
	return a, nil
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
	ip, err := netip.ParseAddr(host)
	if err == nil && ip.IsLoopback() || host == "localhost" {
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
		case a.Fallback == smtprelay.FallbackDirect && !canSign(domain):
			out = append(out, fmt.Sprintf("%s: fallback direct, but no DKIM key for %s (mailgate dkim keygen), or choose rewrite-from/defer", a.Email, domain))
		case a.Fallback == smtprelay.FallbackRewriteFrom && rewriteFrom == "":
			out = append(out, fmt.Sprintf("%s: fallback rewrite-from needs relay.rewrite_from_address", a.Email))
		case a.Fallback == smtprelay.FallbackRewriteFrom && !canSign(rewriteFrom[strings.LastIndex(rewriteFrom, "@")+1:]):
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
		"imap", d.cfg.Google.IMAPAddr, "redis", redactURL(d.cfg.Redis.URL))
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

// smarthostTLS requires STARTTLS when there is a password to protect, and
// uses it when offered otherwise.
func smarthostTLS(cfg *config.Config) string {
	if cfg.Relay.SmarthostUser != "" {
		return "starttls"
	}
	return "opportunistic"
}

func durations(ds []config.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Duration()
	}
	return out
}
