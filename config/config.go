// Package config loads, defaults and validates mailgate's YAML configuration.
//
// A configuration is built in three layers, later ones winning: Defaults, the
// YAML file, then MAILGATE_<SECTION>_<KEY> environment variables (and CLI
// flags, through Set). Validate runs last and reports every problem at once,
// each as "section.key: reason", so an admin fixes a file in one go.
//
// The structs are plain data: no package here opens files, dials or listens.
// mailgate.example.yaml at the repository root lists every key with its
// default; a test keeps it equal to Defaults.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/tlsmode"
)

// DKIM signing algorithms for dkim.keys[].algorithm.
const (
	DKIMRSA     = "rsa"     // rsa-sha256, RFC 6376.
	DKIMEd25519 = "ed25519" // ed25519-sha256, RFC 8463.
)

// Config is mailgate's whole configuration.
type Config struct {
	Redis   Redis   `yaml:"redis"`
	Tickets Tickets `yaml:"tickets"`
	Secrets Secrets `yaml:"secrets"`
	Google  Google  `yaml:"google"`
	Fetch   Fetch   `yaml:"fetch"`
	Relay   Relay   `yaml:"relay"`
	DKIM    DKIM    `yaml:"dkim"`
	HTTP    HTTP    `yaml:"http"`
	Log     Log     `yaml:"log"`

	// ShutdownGrace bounds how long a stop waits for in-flight work.
	ShutdownGrace Duration `yaml:"shutdown_grace"`
}

// Redis says where tickets, events and the relay queue live.
type Redis struct {
	// URL is a go-redis URL: redis://, rediss:// or unix://. It may hold
	// a password, so Masked hides that part.
	URL    string `yaml:"url" secret:"url"`
	Prefix string `yaml:"prefix"`
	// Addrs are Cluster or Sentinel seed addresses (host:port).
	Addrs []string `yaml:"addrs"`
	// MasterName selects Sentinel mode; Addrs are then the sentinels.
	MasterName  string   `yaml:"master_name"`
	DialTimeout Duration `yaml:"dial_timeout"`
}

// Tickets tunes how mail becomes tickets.
type Tickets struct {
	MaxRawBytes      int64    `yaml:"max_raw_bytes"`
	StreamMaxLen     int64    `yaml:"stream_max_len"`
	SupportAddresses []string `yaml:"support_addresses"`
	// TokenThreading says whose "[#1042]" subject token threads a mail
	// onto that ticket: TokenThreadingParticipants or TokenThreadingAnyone.
	TokenThreading string `yaml:"token_threading"`
}

// Values of tickets.token_threading.
const (
	// TokenThreadingParticipants: only the ticket's requester, a CC of
	// one of its mails or a support address; anyone else's mail opens a
	// new ticket that names the token's as related.
	TokenThreadingParticipants = "participants"
	// TokenThreadingAnyone: whoever sent the mail, as mailgate did before.
	TokenThreadingAnyone = "anyone"
)

// Secrets says where key material lives.
type Secrets struct {
	// KeyFile holds the AES-256 key that encrypts refresh tokens at rest.
	// Empty: the default home (see ResolvePaths).
	KeyFile string `yaml:"key_file"`
}

// Google holds the OAuth client and the Gmail endpoints. The endpoints are
// configurable so tests and self-hosted setups can point them elsewhere.
type Google struct {
	ClientID     string       `yaml:"client_id"`
	ClientSecret string       `yaml:"client_secret" secret:"true"`
	AuthURL      string       `yaml:"auth_url"`
	TokenURL     string       `yaml:"token_url"`
	UserinfoURL  string       `yaml:"userinfo_url"`
	IMAPAddr     string       `yaml:"imap_addr"`
	IMAPTLS      tlsmode.Mode `yaml:"imap_tls"` // implicit, starttls, or plain to loopback
	SMTPAddr     string       `yaml:"smtp_addr"`
	SMTPTLS      tlsmode.Mode `yaml:"smtp_tls"` // implicit, starttls, or plain to loopback
	CAFile       string       `yaml:"ca_file"`
	Scopes       []string     `yaml:"scopes"`
}

// Fetch tunes how mailboxes are polled and how failures are retried.
type Fetch struct {
	PollInterval Duration `yaml:"poll_interval"`
	IDLE         bool     `yaml:"idle"`
	IDLERestart  Duration `yaml:"idle_restart"`
	MaxAttempts  int      `yaml:"max_attempts"`
	BatchSize    int      `yaml:"batch_size"`
	// SenderRateLimit is mails per sender per SenderRateWindow; 0 disables it.
	SenderRateLimit  int      `yaml:"sender_rate_limit"`
	SenderRateWindow Duration `yaml:"sender_rate_window"`
	LeaseTTL         Duration `yaml:"lease_ttl"`
	// StartSpread is the window over which the mailboxes' first logins
	// are spread at start, so thousands do not log in at once.
	StartSpread Duration `yaml:"start_spread"`
	BackoffMax  Duration `yaml:"backoff_max"`
	// CommandTimeout is how long the IMAP server may stay silent while a
	// reply is due before the connection is dropped and made again.
	CommandTimeout Duration `yaml:"command_timeout"`
	// SentFolder also reads each account's Sent folder (found by its \Sent
	// attribute) and adds an agent's answer written in Gmail itself to
	// its ticket as a comment by the agent.
	SentFolder bool `yaml:"sent_folder"`
}

// Relay configures the SMTP submission listener the helpdesk sends through
// and the limits that keep mailgate inside Gmail's sending quotas.
type Relay struct {
	Listen          string      `yaml:"listen"`
	ListenTLS       string      `yaml:"listen_tls"`
	Hostname        string      `yaml:"hostname"`
	TLSCert         string      `yaml:"tls_cert"`
	TLSKey          string      `yaml:"tls_key"`
	Users           []RelayUser `yaml:"users"`
	AllowedNetworks []string    `yaml:"allowed_networks"`
	AllowedSenders  []string    `yaml:"allowed_senders"`
	MaxRecipients   int         `yaml:"max_recipients"`
	MaxMessageBytes int64       `yaml:"max_message_bytes"`
	// StripReceived removes the Received fields mail arrives with (the
	// helpdesk's internal hops) before the relay adds its own.
	StripReceived bool `yaml:"strip_received"`

	// What one client, and all of them, may hold: connections, the time
	// to send one command line and one whole message, and the message
	// bytes being received at once over all connections.
	MaxConnections       int      `yaml:"max_connections"`
	MaxConnectionsPerIP  int      `yaml:"max_connections_per_ip"`
	ClientCommandTimeout Duration `yaml:"client_command_timeout"`
	ClientDataTimeout    Duration `yaml:"client_data_timeout"`
	MaxDataInFlightBytes int64    `yaml:"max_data_in_flight_bytes"`

	// Password guessing on AUTH: failures one connection may make before
	// it is closed, the wait before each failure is answered, failures one
	// client address (or user name) may make within auth_lockout before
	// it is refused for that long, and bcrypt checks at once (0: half
	// the CPUs).
	AuthMaxFailures      int      `yaml:"auth_max_failures"`
	AuthFailureDelay     Duration `yaml:"auth_failure_delay"`
	AuthFailureBudget    int      `yaml:"auth_failure_budget"`
	AuthLockout          Duration `yaml:"auth_lockout"`
	AuthConcurrentChecks int      `yaml:"auth_concurrent_checks"`

	Smarthost         string `yaml:"smarthost"`
	SmarthostUser     string `yaml:"smarthost_user"`
	SmarthostPassword string `yaml:"smarthost_password" secret:"true"`

	QuotaWarnAt                      float64 `yaml:"quota_warn_at"`
	GmailDailyLimit                  int     `yaml:"gmail_daily_limit"`
	WorkspaceDailyLimit              int     `yaml:"workspace_daily_limit"`
	MaxRecipientsPerMessage          int     `yaml:"max_recipients_per_message"`
	WorkspaceDailyRecipients         int     `yaml:"workspace_daily_recipients"`
	WorkspaceDailyExternalRecipients int     `yaml:"workspace_daily_external_recipients"`

	MaxQueueLifetime   Duration   `yaml:"max_queue_lifetime"`
	RetrySchedule      []Duration `yaml:"retry_schedule"`
	Workers            int        `yaml:"workers"`
	RewriteFromAddress string     `yaml:"rewrite_from_address"`

	// How long delivery waits for Gmail, an MX host or the smarthost:
	// to connect and greet, to answer a command, to answer the final dot,
	// to answer QUIT. RFC 5321 section 4.5.3.2's figures are the most.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	CommandTimeout Duration `yaml:"command_timeout"`
	DataTimeout    Duration `yaml:"data_timeout"`
	QuitTimeout    Duration `yaml:"quit_timeout"`
}

// RelayUser is one SMTP AUTH account on the relay.
type RelayUser struct {
	Name         string `yaml:"name"`
	PasswordHash string `yaml:"password_hash" secret:"true"`
}

// DKIM lists signing keys and the facts needed to advise on DNS records.
type DKIM struct {
	Keys           []DKIMKey `yaml:"keys"`
	EgressIP       string    `yaml:"egress_ip"`
	EgressHostname string    `yaml:"egress_hostname"`
	DMARCRUA       string    `yaml:"dmarc_rua"`
}

// DKIMKey is one signing key, published at <selector>._domainkey.<domain>.
type DKIMKey struct {
	Domain         string `yaml:"domain"`
	Selector       string `yaml:"selector"`
	Algorithm      string `yaml:"algorithm"`
	PrivateKeyFile string `yaml:"private_key_file"`
}

// HTTP configures the web listener.
type HTTP struct {
	Listen string `yaml:"listen"`
	// Token, when set, is the Bearer token /status and /metrics require;
	// a listener beyond loopback must have one.
	Token string `yaml:"token" secret:"true"`
	// Pprof serves Go's profiles on /debug/pprof/ (behind Token like
	// /status), to find where memory and CPU go; off by default.
	Pprof bool `yaml:"pprof"`
}

// Log configures log/slog output.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Defaults returns a new configuration holding every default. Empty lists
// are nil.
func Defaults() *Config {
	return &Config{
		Redis: Redis{
			URL:         "redis://127.0.0.1:6379/0",
			Prefix:      "mailgate:",
			DialTimeout: Duration(5 * time.Second),
		},
		Tickets: Tickets{
			MaxRawBytes:    50 << 20,
			StreamMaxLen:   1_000_000,
			TokenThreading: TokenThreadingParticipants,
		},
		Secrets: Secrets{}, // key_file: ResolvePaths gives it its default home
		Google: Google{
			AuthURL:     "https://accounts.google.com/o/oauth2/auth",
			TokenURL:    "https://oauth2.googleapis.com/token",
			UserinfoURL: "https://openidconnect.googleapis.com/v1/userinfo",
			IMAPAddr:    "imap.gmail.com:993",
			IMAPTLS:     tlsmode.Implicit,
			SMTPAddr:    "smtp.gmail.com:587",
			SMTPTLS:     tlsmode.StartTLS,
			Scopes:      []string{"https://mail.google.com/", "openid", "email"},
		},
		Fetch: Fetch{
			PollInterval:     Duration(time.Minute),
			IDLE:             true,
			IDLERestart:      Duration(25 * time.Minute),
			MaxAttempts:      5,
			BatchSize:        100,
			SenderRateLimit:  20,
			SenderRateWindow: Duration(time.Hour),
			LeaseTTL:         Duration(30 * time.Second),
			StartSpread:      Duration(30 * time.Second),
			BackoffMax:       Duration(5 * time.Minute),
			CommandTimeout:   Duration(time.Minute),
		},
		Relay: Relay{
			Listen:                           "127.0.0.1:2525",
			AllowedNetworks:                  []string{"127.0.0.0/8", "::1/128"},
			MaxRecipients:                    100,
			MaxMessageBytes:                  25 << 20,
			MaxConnections:                   100,
			MaxConnectionsPerIP:              10,
			ClientCommandTimeout:             Duration(5 * time.Minute),
			ClientDataTimeout:                Duration(10 * time.Minute),
			MaxDataInFlightBytes:             100 << 20,
			AuthMaxFailures:                  3,
			AuthFailureDelay:                 Duration(time.Second),
			AuthFailureBudget:                10,
			AuthLockout:                      Duration(15 * time.Minute),
			QuotaWarnAt:                      0.9,
			GmailDailyLimit:                  sendlimit.GmailMessages,
			WorkspaceDailyLimit:              sendlimit.WorkspaceMessages,
			MaxRecipientsPerMessage:          sendlimit.PerMessageRecipients,
			WorkspaceDailyRecipients:         sendlimit.WorkspaceRecipients,
			WorkspaceDailyExternalRecipients: sendlimit.WorkspaceExternal,
			MaxQueueLifetime:                 Duration(120 * time.Hour),
			RetrySchedule: []Duration{
				Duration(time.Minute), Duration(5 * time.Minute), Duration(15 * time.Minute),
				Duration(time.Hour), Duration(2 * time.Hour),
			},
			Workers:        4,
			ConnectTimeout: Duration(30 * time.Second),
			CommandTimeout: Duration(time.Minute),
			DataTimeout:    Duration(2 * time.Minute),
			QuitTimeout:    Duration(10 * time.Second),
		},
		HTTP:          HTTP{Listen: "127.0.0.1:8025"},
		Log:           Log{Level: "info", Format: "text"},
		ShutdownGrace: Duration(30 * time.Second),
	}
}

// Load builds a configuration: Defaults, then the YAML file at path (none if
// path is ""), then MAILGATE_* overrides from environ (os.Environ format),
// then ResolvePaths and Validate. Every error names the key, and for file errors the line.
// Unless the file cannot be read or parsed at all, the error lists every
// problem found in the file, the environment and validation together.
func Load(path string, environ []string) (*Config, error) {
	c := Defaults()
	var errs []error
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		root, err := parseFile(path, data)
		if err != nil {
			return nil, err
		}
		errs = append(errs, decodeNode(path, root, c))
	}
	errs = append(errs, c.applyEnv(environ))
	c.ResolvePaths(path, environ)
	errs = append(errs, c.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// YAML renders the configuration in the file format Load reads. It includes
// secrets; print Masked().YAML() instead.
func (c *Config) YAML() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), nil
}

// Duration is a time.Duration written in YAML, env vars and flags as a Go
// duration string ("30s", "25m", "120h").
type Duration time.Duration

// Duration returns d as a time.Duration.
func (d Duration) Duration() time.Duration { return time.Duration(d) }

// String formats d without zero trailing units: "1m", not "1m0s".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalYAML writes d as a duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a duration string such as "5m".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration like \"30s\", got %s", n.Line, nodeKind(n))
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

func parseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		if _, numErr := strconv.ParseFloat(strings.TrimSpace(s), 64); numErr == nil {
			return 0, fmt.Errorf("invalid duration %q (missing unit, e.g. \"%ss\")", s, strings.TrimSpace(s))
		}
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return Duration(v), nil
}
