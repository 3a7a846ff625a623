package config

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/internal/dnsname"
	"github.com/mailgate/mailgate/tlsmode"
)

// gmailIDLELimit is when Gmail drops an idle IMAP connection; RFC 2177 asks
// clients to re-issue IDLE at least every 29 minutes, and Gmail enforces it.
const gmailIDLELimit = 29 * time.Minute

// Validate checks every key and returns all problems joined, one per line,
// each "section.key: reason". It checks values only: it opens no files.
func (c *Config) Validate() error {
	var p problems

	// redis
	p.redisURL("redis.url", c.Redis.URL)
	for i, a := range c.Redis.Addrs {
		p.hostPort(fmt.Sprintf("redis.addrs[%d]", i), a, true)
	}
	if c.Redis.MasterName != "" && len(c.Redis.Addrs) == 0 {
		p.add("redis.addrs", "must list the Sentinel addresses when redis.master_name is set")
	}
	p.positiveDuration("redis.dial_timeout", c.Redis.DialTimeout)

	// tickets
	p.positive("tickets.max_raw_bytes", c.Tickets.MaxRawBytes)
	if c.Tickets.StreamMaxLen < 0 {
		p.add("tickets.stream_max_len", "must be 0 (never trim) or positive, got %d", c.Tickets.StreamMaxLen)
	}
	for i, a := range c.Tickets.SupportAddresses {
		p.email(fmt.Sprintf("tickets.support_addresses[%d]", i), a)
	}
	p.oneOf("tickets.token_threading", c.Tickets.TokenThreading, TokenThreadingParticipants, TokenThreadingAnyone)

	// secrets.key_file: empty means its default home (ResolvePaths).

	// google
	g := c.Google
	p.httpURL("google.auth_url", g.AuthURL)
	p.httpURL("google.token_url", g.TokenURL)
	p.httpURL("google.userinfo_url", g.UserinfoURL)
	p.hostPort("google.imap_addr", g.IMAPAddr, true)
	p.tlsMode("google.imap_tls", g.IMAPTLS, "IMAP", g.IMAPAddr)
	p.hostPort("google.smtp_addr", g.SMTPAddr, true)
	p.tlsMode("google.smtp_tls", g.SMTPTLS, "SMTP", g.SMTPAddr)
	if len(g.Scopes) == 0 {
		p.add("google.scopes", "must not be empty; Gmail IMAP and SMTP need https://mail.google.com/")
	}
	for i, s := range g.Scopes {
		if strings.TrimSpace(s) == "" {
			p.add(fmt.Sprintf("google.scopes[%d]", i), "must not be empty")
		}
	}

	// fetch
	f := c.Fetch
	p.positiveDuration("fetch.poll_interval", f.PollInterval)
	p.positiveDuration("fetch.idle_restart", f.IDLERestart)
	if f.IDLERestart.Duration() >= gmailIDLELimit {
		p.add("fetch.idle_restart", "must be under 29m, when Gmail drops idle connections (RFC 2177), got %s", f.IDLERestart)
	}
	p.positive("fetch.max_attempts", int64(f.MaxAttempts))
	p.positive("fetch.batch_size", int64(f.BatchSize))
	if f.SenderRateLimit < 0 {
		p.add("fetch.sender_rate_limit", "must be 0 (no limit) or positive, got %d", f.SenderRateLimit)
	}
	p.positiveDuration("fetch.sender_rate_window", f.SenderRateWindow)
	p.positiveDuration("fetch.lease_ttl", f.LeaseTTL)
	p.positiveDuration("fetch.start_spread", f.StartSpread)
	p.positiveDuration("fetch.backoff_max", f.BackoffMax)
	p.positiveDuration("fetch.command_timeout", f.CommandTimeout)

	// relay
	r := c.Relay
	p.hostPort("relay.listen", r.Listen, false)
	if r.Listen == "" && r.ListenTLS == "" {
		p.add("relay.listen", "must not be empty unless relay.listen_tls is set")
	}
	if r.ListenTLS != "" {
		p.hostPort("relay.listen_tls", r.ListenTLS, false)
		if r.TLSCert == "" || r.TLSKey == "" {
			p.add("relay.listen_tls", "needs relay.tls_cert and relay.tls_key")
		}
	}
	if r.Hostname != "" && !dnsname.Valid(r.Hostname) {
		p.add("relay.hostname", "%q is not a valid host name", r.Hostname)
	}
	if (r.TLSCert == "") != (r.TLSKey == "") {
		key := "relay.tls_key"
		if r.TLSCert == "" {
			key = "relay.tls_cert"
		}
		p.add(key, "relay.tls_cert and relay.tls_key must be set together")
	}
	users := map[string]bool{}
	for i, u := range r.Users {
		key := fmt.Sprintf("relay.users[%d]", i)
		switch {
		case u.Name == "":
			p.add(key+".name", "must not be empty")
		case users[u.Name]:
			p.add(key+".name", "duplicate user %q", u.Name)
		}
		users[u.Name] = true
		p.required(key+".password_hash", u.PasswordHash)
	}
	for i, n := range r.AllowedNetworks {
		if _, _, err := net.ParseCIDR(n); err != nil {
			p.add(fmt.Sprintf("relay.allowed_networks[%d]", i), "invalid CIDR %q (want e.g. 10.0.0.0/8 or ::1/128)", n)
		}
	}
	p.relayExposure(&r)
	for i, s := range r.AllowedSenders {
		key := fmt.Sprintf("relay.allowed_senders[%d]", i)
		if strings.Contains(s, "@") {
			p.email(key, s)
		} else if !dnsname.Valid(s) {
			p.add(key, "%q is neither a domain nor an email address", s)
		}
	}
	p.positive("relay.max_recipients", int64(r.MaxRecipients))
	p.positive("relay.max_message_bytes", r.MaxMessageBytes)
	p.positive("relay.max_connections", int64(r.MaxConnections))
	p.positive("relay.max_connections_per_ip", int64(r.MaxConnectionsPerIP))
	if r.MaxConnectionsPerIP > r.MaxConnections {
		p.add("relay.max_connections_per_ip", "must be at most relay.max_connections (%d), got %d", r.MaxConnections, r.MaxConnectionsPerIP)
	}
	p.positiveDuration("relay.client_command_timeout", r.ClientCommandTimeout)
	p.positiveDuration("relay.client_data_timeout", r.ClientDataTimeout)
	if r.MaxDataInFlightBytes < r.MaxMessageBytes {
		p.add("relay.max_data_in_flight_bytes", "must be at least relay.max_message_bytes (%d), or a message of that size could never be received; got %d", r.MaxMessageBytes, r.MaxDataInFlightBytes)
	}
	p.positive("relay.auth_max_failures", int64(r.AuthMaxFailures))
	p.positiveDuration("relay.auth_failure_delay", r.AuthFailureDelay)
	p.positive("relay.auth_failure_budget", int64(r.AuthFailureBudget))
	p.positiveDuration("relay.auth_lockout", r.AuthLockout)
	if r.AuthConcurrentChecks < 0 {
		p.add("relay.auth_concurrent_checks", "must be 0 (half the CPUs) or positive, got %d", r.AuthConcurrentChecks)
	}
	p.hostPort("relay.smarthost", r.Smarthost, true)
	if r.SmarthostUser != "" && r.Smarthost == "" {
		p.add("relay.smarthost_user", "set without relay.smarthost")
	}
	if r.SmarthostPassword != "" && r.SmarthostUser == "" {
		p.add("relay.smarthost_password", "set without relay.smarthost_user")
	}
	if !(r.QuotaWarnAt > 0 && r.QuotaWarnAt <= 1) {
		p.add("relay.quota_warn_at", "must be a fraction in (0, 1], got %g", r.QuotaWarnAt)
	}
	p.positive("relay.gmail_daily_limit", int64(r.GmailDailyLimit))
	p.positive("relay.workspace_daily_limit", int64(r.WorkspaceDailyLimit))
	p.positive("relay.max_recipients_per_message", int64(r.MaxRecipientsPerMessage))
	p.positive("relay.workspace_daily_recipients", int64(r.WorkspaceDailyRecipients))
	p.positive("relay.workspace_daily_external_recipients", int64(r.WorkspaceDailyExternalRecipients))
	p.positiveDuration("relay.max_queue_lifetime", r.MaxQueueLifetime)
	if len(r.RetrySchedule) == 0 {
		p.add("relay.retry_schedule", "must list at least one delay")
	}
	for i, d := range r.RetrySchedule {
		p.positiveDuration(fmt.Sprintf("relay.retry_schedule[%d]", i), d)
	}
	p.positive("relay.workers", int64(r.Workers))
	// RFC 5321 section 4.5.3.2 asks a client to wait at most this long
	// for any server; longer only holds a worker on a hung one.
	p.timeout("relay.connect_timeout", r.ConnectTimeout, 5*time.Minute, "the greeting (section 4.5.3.2.1)")
	p.timeout("relay.command_timeout", r.CommandTimeout, 5*time.Minute, "MAIL and RCPT (sections 4.5.3.2.2-3)")
	p.timeout("relay.data_timeout", r.DataTimeout, 10*time.Minute, "the reply to the final dot (section 4.5.3.2.6)")
	p.timeout("relay.quit_timeout", r.QuitTimeout, 5*time.Minute, "any command")
	if r.RewriteFromAddress != "" {
		p.email("relay.rewrite_from_address", r.RewriteFromAddress)
	}

	// dkim
	selectors := map[string]bool{}
	for i, k := range c.DKIM.Keys {
		key := fmt.Sprintf("dkim.keys[%d]", i)
		if !dnsname.Valid(k.Domain) {
			p.add(key+".domain", "%q is not a valid domain", k.Domain)
		}
		// A selector is one or more DNS labels (RFC 6376 section 3.1).
		if !dnsname.Valid(k.Selector) {
			p.add(key+".selector", "%q is not a valid selector", k.Selector)
		}
		if id := k.Selector + "._domainkey." + k.Domain; selectors[id] {
			p.add(key+".selector", "duplicate key %s", id)
		} else {
			selectors[id] = true
		}
		p.oneOf(key+".algorithm", k.Algorithm, DKIMRSA, DKIMEd25519)
		p.required(key+".private_key_file", k.PrivateKeyFile)
	}
	if ip := c.DKIM.EgressIP; ip != "" && net.ParseIP(ip) == nil {
		p.add("dkim.egress_ip", "invalid IP address %q", ip)
	}
	if h := c.DKIM.EgressHostname; h != "" && !dnsname.Valid(h) {
		p.add("dkim.egress_hostname", "%q is not a valid host name", h)
	}
	if rua := c.DKIM.DMARCRUA; rua != "" {
		p.email("dkim.dmarc_rua", strings.TrimPrefix(rua, "mailto:"))
	}

	// http, log, top level
	p.hostPort("http.listen", c.HTTP.Listen, false)
	if c.HTTP.Listen == "" {
		p.add("http.listen", "must not be empty")
	}
	p.httpExposure(c.HTTP)
	p.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	p.oneOf("log.format", c.Log.Format, "text", "json")
	p.positiveDuration("shutdown_grace", c.ShutdownGrace)

	return errors.Join(p...)
}

// problems collects validation errors, each prefixed with its key.
type problems []error

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (p *problems) required(key, v string) {
	if strings.TrimSpace(v) == "" {
		p.add(key, "must not be empty")
	}
}

func (p *problems) positive(key string, n int64) {
	if n <= 0 {
		p.add(key, "must be positive, got %d", n)
	}
}

func (p *problems) positiveDuration(key string, d Duration) {
	if d <= 0 {
		p.add(key, "must be a positive duration, got %s", d)
	}
}

// timeout checks a positive duration no longer than most, the wait RFC
// 5321 gives for what.
func (p *problems) timeout(key string, d Duration, most time.Duration, what string) {
	p.positiveDuration(key, d)
	if d.Duration() > most {
		p.add(key, "must be at most %s, what RFC 5321 asks a client to wait for %s; got %s", Duration(most), what, d)
	}
}

func (p *problems) oneOf(key, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		p.add(key, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
	}
}

// hostPort checks a host:port address. An empty value is allowed (the key
// is then optional or checked elsewhere); dial addresses need a host,
// listen addresses may leave it empty for all interfaces.
func (p *problems) hostPort(key, v string, dial bool) {
	if v == "" {
		return
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		p.add(key, "want host:port, got %q", v)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.add(key, "port %q of %q must be a number from 0 to 65535", port, v)
	}
	if dial && host == "" {
		p.add(key, "missing host in %q", v)
	}
}

// email accepts a bare address (support@example.com): the value is compared
// with addresses taken from mail, so a display name would never match.
func (p *problems) email(key, v string) {
	a, err := mail.ParseAddress(v)
	switch {
	case err != nil:
		p.add(key, "invalid email address %q", v)
	case a.Address != v:
		p.add(key, "want a bare address like %q, got %q", a.Address, v)
	}
}

// tlsMode checks an IMAP/SMTP TLS mode. Plaintext would expose OAuth
// tokens, so it is allowed only to a loopback host (a local test server or
// a TLS-terminating proxy on the same machine).
func (p *problems) tlsMode(key string, mode tlsmode.Mode, proto, addr string) {
	p.oneOf(key, mode.String(), tlsmode.Implicit.String(), tlsmode.StartTLS.String(), tlsmode.Plain.String())
	if mode != tlsmode.Plain {
		return
	}
	if host, _, err := net.SplitHostPort(addr); err == nil && !tlsmode.IsLoopback(host) {
		p.add(key, "plain (unencrypted) %s is only allowed to a loopback host, not %q", proto, host)
	}
}

// httpURL checks an OAuth endpoint; http:// is allowed only to loopback
// for the same reason as plaintext IMAP.
func (p *problems) httpURL(key, v string) {
	u, err := url.Parse(v)
	switch {
	case err != nil || u.Host == "":
		p.add(key, "want an absolute https:// URL, got %q", v)
	case u.Scheme == "https":
	case u.Scheme == "http" && tlsmode.IsLoopback(u.Hostname()):
	case u.Scheme == "http":
		p.add(key, "http:// is only allowed to a loopback host, use https://")
	default:
		p.add(key, "want an https:// URL, got scheme %q", u.Scheme)
	}
}

// redisURL checks the forms go-redis accepts without echoing the value,
// which may hold a password.
func (p *problems) redisURL(key, v string) {
	if v == "" {
		p.add(key, "must not be empty")
		return
	}
	u, err := url.Parse(v)
	if err != nil {
		p.add(key, "not a valid URL (want e.g. redis://127.0.0.1:6379/0)")
		return
	}
	switch u.Scheme {
	case "redis", "rediss":
		if u.Host == "" {
			p.add(key, "missing host (want e.g. redis://127.0.0.1:6379/0)")
		} else if u.Port() != "" {
			if n, err := strconv.Atoi(u.Port()); err != nil || n > 65535 {
				p.add(key, "invalid port %q", u.Port())
			}
		}
		if db := strings.TrimPrefix(u.Path, "/"); db != "" {
			if n, err := strconv.Atoi(db); err != nil || n < 0 {
				p.add(key, "database %q must be a number, as in redis://host:6379/0", db)
			}
		}
	case "unix":
		if u.Path == "" {
			p.add(key, "missing socket path (want e.g. unix:///run/redis/redis.sock)")
		}
	default:
		p.add(key, "scheme %q not supported; want redis://, rediss:// or unix://", u.Scheme)
	}
}
