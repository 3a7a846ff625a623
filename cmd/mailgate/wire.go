package main

// Wiring: the configuration turned into each package's options, and the
// stores, clients and servers built from them. The commands call these;
// nothing here parses flags or prints.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/imapfetch"
	"github.com/mailgate/mailgate/internal/proclive"
	"github.com/mailgate/mailgate/metrics"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/redisconn"
	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
	"github.com/mailgate/mailgate/tickets"
	"github.com/mailgate/mailgate/tlsmode"
	"github.com/mailgate/mailgate/web"
)

// newLogger builds the process logger from log.level and log.format.
func newLogger(cfg *config.Config, w *os.File) *slog.Logger {
	setLogLevel(cfg)
	opts := &slog.HandlerOptions{Level: &logLevel}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logLevel is the process's log level; a configuration reload (SIGHUP)
// changes it in place.
var logLevel slog.LevelVar

func setLogLevel(cfg *config.Config) {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level)) // validated by config
	logLevel.Set(lvl)
}

// redisLog sends go-redis's own messages (pool dial retries...) to the
// debug log instead of stderr: the error that reaches the user says it.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// openRedis connects as configured (package redisconn): Sentinel when
// redis.master_name is set, Cluster when redis.addrs lists seeds, else a
// single server.
func openRedis(ctx context.Context, cfg *config.Config) (redis.UniversalClient, error) {
	redis.SetLogger(redisLog{slog.Default()})
	o := redisOptions(cfg)
	rdb, err := redisconn.New(o)
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, o.DialTimeout+time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis (%s) does not answer (%v): start redis-server or set --redis-url / redis.url", o, err)
	}
	return rdb, nil
}

func redisOptions(cfg *config.Config) redisconn.Options {
	rc := cfg.Redis
	return redisconn.Options{URL: rc.URL, Addrs: rc.Addrs, MasterName: rc.MasterName, DialTimeout: rc.DialTimeout.Duration()}
}

// redisWhere says which Redis the configuration points at, for logs: the
// sentinels and master name, the Cluster's seeds, or the URL, without the
// password.
func redisWhere(cfg *config.Config) string { return redisOptions(cfg).String() }

func newTicketStore(rdb redis.UniversalClient, cfg *config.Config, acc *accounts.Store, log *slog.Logger) *tickets.Store {
	return tickets.NewStore(rdb, tickets.Options{
		Prefix:               cfg.Redis.Prefix,
		MaxRawBytes:          cfg.Tickets.MaxRawBytes,
		StreamMaxLen:         cfg.Tickets.StreamMaxLen,
		SenderRateLimit:      cfg.Fetch.SenderRateLimit,
		SenderRateWindow:     cfg.Fetch.SenderRateWindow.Duration(),
		SupportAddresses:     acc.SupportAddresses,
		TokenThreadingAnyone: cfg.Tickets.TokenThreading == config.TokenThreadingAnyone,
		Logger:               log,
	})
}

// openAccounts opens Redis and the account store. withKey loads (or
// creates) the key file that seals refresh tokens; listing needs none, so
// a read-only command never creates one.
func openAccounts(ctx context.Context, cfg *config.Config, withKey bool) (*accounts.Store, redis.UniversalClient, error) {
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	opts := accounts.Options{Prefix: cfg.Redis.Prefix, Extra: cfg.Tickets.SupportAddresses}
	if withKey {
		if opts.Box, err = openKey(ctx, cfg.Secrets.KeyFile, accounts.New(rdb, opts)); err != nil {
			rdb.Close()
			return nil, nil, err
		}
	}
	return accounts.New(rdb, opts), rdb, nil
}

// googleOAuth is the OAuth client mailgate uses with Google (or the
// endpoints configured in its place).
func googleOAuth(cfg *config.Config) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     cfg.Google.ClientID,
		ClientSecret: cfg.Google.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:  cfg.Google.AuthURL,
			TokenURL: cfg.Google.TokenURL,
			// Google takes the client credentials in the form. Left to
			// guess, x/oauth2 tries Basic auth first and sends every
			// refused refresh a second time the other way.
			AuthStyle: oauth2.AuthStyleInParams,
		},
		Scopes: cfg.Google.Scopes,
	}
}

// newFetcher builds the IMAP fetcher from the google and fetch sections,
// taking access tokens from tokens. m, when not nil, receives the
// fetchers' metrics (serve).
func newFetcher(cfg *config.Config, acc *accounts.Store, st *tickets.Store, tokens *oauth.Registry, log *slog.Logger, m *metrics.Metrics) (*imapfetch.Fetcher, error) {
	tlsCfg, _, err := googleClients(cfg)
	if err != nil {
		return nil, err
	}
	o := imapfetch.Options{
		IMAPAddr:     cfg.Google.IMAPAddr,
		TLSMode:      cfg.Google.IMAPTLS,
		TLSConfig:    tlsCfg,
		PollInterval: cfg.Fetch.PollInterval.Duration(),
		IdleRestart:  cfg.Fetch.IDLERestart.Duration(),
		LeaseTTL:     cfg.Fetch.LeaseTTL.Duration(),
		StartSpread:  cfg.Fetch.StartSpread.Duration(),
		BackoffMax:   cfg.Fetch.BackoffMax.Duration(),
		IDLE:         cfg.Fetch.IDLE,
		SentFolder:   cfg.Fetch.SentFolder,
		MaxAttempts:  cfg.Fetch.MaxAttempts,
		BatchSize:    cfg.Fetch.BatchSize,
		Tokens:       tokens,
		Logger:       log,
	}
	o.CommandTimeout = cfg.Fetch.CommandTimeout.Duration()
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

// relayServerTLS loads the relay's certificate and key, or returns nil
// when relay.tls_cert is not set.
func relayServerTLS(cfg *config.Config) (*tls.Config, error) {
	if cfg.Relay.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.Relay.TLSCert, cfg.Relay.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("relay.tls_cert/relay.tls_key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// relayLimits turns the relay.* limits of the configuration into the
// relay's per-kind Gmail limits. Consumer Gmail has no published daily
// recipient cap separate from its message cap, so only the message and
// per-message counts apply to it.
func relayLimits(cfg *config.Config) func(accounts.Kind) sendlimit.Limits {
	r := cfg.Relay
	return func(kind accounts.Kind) sendlimit.Limits {
		if kind == accounts.KindWorkspace {
			return sendlimit.Limits{
				Messages:       r.WorkspaceDailyLimit,
				Recipients:     r.WorkspaceDailyRecipients,
				External:       r.WorkspaceDailyExternalRecipients,
				PerMessageRcpt: r.MaxRecipientsPerMessage,
			}
		}
		return sendlimit.Limits{Messages: r.GmailDailyLimit, PerMessageRcpt: r.MaxRecipientsPerMessage}
	}
}

// loadDKIMKeys reads the configured signing keys, checking each file holds
// the algorithm the configuration names.
func loadDKIMKeys(cfg *config.Config) ([]dkim.Key, error) {
	var keys []dkim.Key
	for i, kc := range cfg.DKIM.Keys {
		s, err := dkim.LoadKey(kc.PrivateKeyFile)
		if err != nil {
			return nil, fmt.Errorf("dkim.keys[%d]: %w", i, err)
		}
		if got, _ := dkim.Algorithm(s); got != kc.Algorithm {
			return nil, fmt.Errorf("dkim.keys[%d]: %s holds an %s key, but algorithm is %s", i, kc.PrivateKeyFile, got, kc.Algorithm)
		}
		keys = append(keys, dkim.Key{Domain: kc.Domain, Selector: kc.Selector, Signer: s})
	}
	return keys, nil
}

func recordOptions(cfg *config.Config, domain string) dkim.RecordOptions {
	return dkim.RecordOptions{
		Domain:         domain,
		EgressIP:       cfg.DKIM.EgressIP,
		EgressHostname: cfg.DKIM.EgressHostname,
		// The relay sends through Gmail while the quota lasts, and an admin
		// may switch an account to direct sending at any time: SPF must
		// allow both Google and the egress address.
		IncludeGoogle: true,
		DMARCRUA:      cfg.DKIM.DMARCRUA,
	}
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
			return d.relay.Ready(ctx)
		},
		Status:   func(ctx context.Context) (any, error) { return d.state.Gather(ctx) },
		Registry: d.metrics.Registry(),
		Logger:   d.log,
		Token:    d.cfg.HTTP.Token,
		Pprof:    d.cfg.HTTP.Pprof,
		// The console's header: password masked, Cluster/Sentinel seeds.
		Version: version(),
		Redis:   strings.TrimSpace(fmt.Sprint(d.cfg.Masked().Redis.URL, " ", strings.Join(d.cfg.Redis.Addrs, ","), " prefix ", d.cfg.Redis.Prefix)),
		WarnAt:  d.cfg.Relay.QuotaWarnAt,
	})
	var err error
	if d.httpL, err = net.Listen("tcp", d.cfg.HTTP.Listen); err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	return nil
}

func (d *daemon) buildRelay(ctx context.Context) error {
	cfg, log, q := d.cfg, d.log, d.queue
	hostname, warning := cfg.RelayHostname(d.opts.names)
	if warning != "" {
		log.Warn(warning)
	}
	access, err := relayAccess(cfg)
	if err != nil {
		return err
	}
	users, nets := access.Users, access.AllowedNetworks
	serverTLS, err := relayServerTLS(cfg)
	if err != nil {
		return err
	}
	// Validate applied this rule already; a configuration built in code
	// (the demo, tests) meets it here.
	if err := cfg.Relay.CheckExposure(); err != nil {
		return err
	}
	st := d.tickets
	d.smtp = smtprelay.NewServer(q, smtprelay.ServerOptions{
		Hostname: hostname, Users: users, AllowedNetworks: nets, AllowedSenders: cfg.Relay.AllowedSenders,
		SupportAddresses: d.acc.SupportAddresses, MaxRecipients: cfg.Relay.MaxRecipients,
		MaxMessageBytes: cfg.Relay.MaxMessageBytes, TLS: serverTLS, Logger: log, OnAccept: d.metrics.RelayAccept,
		Limits:        serverLimits(cfg),
		AuthLimits:    relayAuthLimits(cfg.Relay),
		StripReceived: cfg.Relay.StripReceived,
		// The customer's reply to this notification must thread onto its
		// ticket: register its Message-ID as soon as it is accepted. Any
		// mail is registered as sent too, before Gmail can copy it to the
		// Sent folder, so that reading that folder skips it.
		Accepted: func(ctx context.Context, m *smtprelay.Message) {
			if m.MessageID == "" {
				return
			}
			if err := st.RegisterSent(ctx, m.MessageID); err != nil {
				log.Warn("relay: cannot register the mail's Message-ID as sent", "queue_id", m.ID, "err", err)
			}
			if m.Ticket == 0 {
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
	clientTLSCfg, _, err := googleClients(cfg)
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
			Tokens: d.tokens},
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
		Timeouts:      relayTimeouts(cfg),
		Consumer:      consumerName(hostname),
		ShutdownGrace: cfg.ShutdownGrace.Duration(),
		Publish: func(ctx context.Context, typ tickets.EventType, ticket int64, data any) {
			if err := st.Publish(ctx, typ, ticket, data); err != nil {
				log.Warn("cannot publish event", "type", typ, "err", err)
			}
		},
		Logger:        log,
		OnDelivery:    d.metrics.Delivery,
		OnInterrupted: d.metrics.Interrupted,
		OnQueueLost:   d.metrics.QueueLost,
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

// relayTimeouts are the relay's waits for the servers it delivers to.
func relayTimeouts(cfg *config.Config) smtprelay.Timeouts {
	r := cfg.Relay
	return smtprelay.Timeouts{Connect: r.ConnectTimeout.Duration(), Command: r.CommandTimeout.Duration(),
		Data: r.DataTimeout.Duration(), Quit: r.QuitTimeout.Duration()}
}

// serverLimits bound what the relay's clients may hold.
func serverLimits(cfg *config.Config) smtprelay.Limits {
	r := cfg.Relay
	return smtprelay.Limits{MaxConnections: r.MaxConnections, MaxPerIP: r.MaxConnectionsPerIP,
		CommandTimeout: r.ClientCommandTimeout.Duration(), DataTimeout: r.ClientDataTimeout.Duration(),
		MaxDataInFlight: r.MaxDataInFlightBytes}
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

// smarthostTLS requires STARTTLS when there is a password to protect, and
// uses it when offered otherwise.
func smarthostTLS(cfg *config.Config) tlsmode.Mode {
	if cfg.Relay.SmarthostUser != "" {
		return tlsmode.StartTLS
	}
	return tlsmode.Opportunistic
}

func durations(ds []config.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Duration()
	}
	return out
}

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

// relayAuthLimits are the relay's limits on password guessing.
func relayAuthLimits(r config.Relay) smtprelay.AuthLimits {
	return smtprelay.AuthLimits{MaxFailures: r.AuthMaxFailures, FailureDelay: r.AuthFailureDelay.Duration(),
		Budget: r.AuthFailureBudget, Lockout: r.AuthLockout.Duration(), Checks: r.AuthConcurrentChecks}
}

// consumerName names this process's delivery workers in the queue: the
// machine's host name and the pid, so that a restart on the same machine
// sees that a killed predecessor is gone and takes its messages at once
// (smtprelay.Queue.Reclaim). Without a host name, the relay's.
func consumerName(relayHost string) string {
	host := proclive.Host()
	if host == "" || strings.Contains(host, ":") {
		host = relayHost
	}
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}
