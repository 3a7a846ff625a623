package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailgate/mailgate/tlsmode"
)

const examplePath = "../mailgate.example.yaml"

// writeConfig writes body to a mailgate.yaml in a fresh directory.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mailgate.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultsValid(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("Defaults().Validate() = %v, want nil", err)
	}
}

// The example file documents every key with its default; this keeps it
// from drifting from Defaults.
func TestExampleIsDefaults(t *testing.T) {
	got, err := Load(examplePath, nil)
	if err != nil {
		t.Fatalf("Load(%s) = %v", examplePath, err)
	}
	want := Defaults()
	want.ResolvePaths(examplePath, nil)
	if !reflect.DeepEqual(got, want) {
		gotY, _ := got.YAML()
		wantY, _ := want.YAML()
		t.Fatalf("example differs from Defaults()\nexample:\n%s\ndefaults:\n%s", gotY, wantY)
	}

	// A key missing from the example would still load as its default, so
	// check that every key is written out.
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	written := map[string]bool{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := prefix + n.Content[i].Value
			written[key] = true
			if n.Content[i+1].Kind == yaml.MappingNode {
				walk(n.Content[i+1], key+".")
			}
		}
	}
	walk(doc.Content[0], "")
	for _, f := range fields() {
		if !written[f.key] {
			t.Errorf("%s: key missing from %s", f.key, examplePath)
		}
		if !f.settable() {
			// Lists of entries default to empty; their fields must be
			// shown in a commented-out example entry.
			et := f.typ.Elem()
			for i := range et.NumField() {
				if name := yamlName(et.Field(i)); !strings.Contains(string(data), "#    "+name+":") &&
					!strings.Contains(string(data), "#  - "+name+":") {
					t.Errorf("%s[].%s: not shown in %s", f.key, name, examplePath)
				}
			}
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string   // file body; "" loads no file
		env     []string // environ
		want    []string // substrings of the error
		wantNot string   // must not appear (secrets)
	}{
		{name: "unknown key", yaml: "relay:\n  max_recipients: 5\n  listn: x\n",
			want: []string{"mailgate.yaml:3: relay.listn: unknown key", `did you mean "listen"`}},
		{name: "unknown section", yaml: "relya:\n  listen: x\n", want: []string{"relya: unknown key"}},
		{name: "unknown key in list entry", yaml: "relay:\n  users:\n    - name: a\n      pasword_hash: x\n",
			want: []string{"relay.users[0].pasword_hash: unknown key"}},
		{name: "duplicate key", yaml: "log:\n  level: info\n  level: debug\n",
			want: []string{"log.level: duplicate key (first set on line 2)"}},
		{name: "string for int", yaml: "fetch:\n  batch_size: abc\n",
			want: []string{`mailgate.yaml:2: fetch.batch_size: invalid integer "abc"`}},
		{name: "mapping for string", yaml: "relay:\n  listen: {host: x}\n",
			want: []string{"relay.listen: want a string, got a mapping"}},
		{name: "scalar for list", yaml: "relay:\n  allowed_networks: 10.0.0.0/8\n",
			want: []string{"relay.allowed_networks: want a list"}},
		{name: "scalar for section", yaml: "relay: yes\n", want: []string{"relay: want a mapping"}},
		{name: "bad bool", yaml: "fetch:\n  idle: yes\n", want: []string{`fetch.idle: invalid boolean "yes"`}},
		{name: "bad duration", yaml: "fetch:\n  poll_interval: abc\n",
			want: []string{`fetch.poll_interval: invalid duration "abc"`}},
		{name: "duration without unit", yaml: "fetch:\n  poll_interval: 60\n",
			want: []string{"fetch.poll_interval", "missing unit"}},
		{name: "bad duration in list", yaml: "relay:\n  retry_schedule: [1m, soon]\n",
			want: []string{`relay.retry_schedule[1]: invalid duration "soon"`}},
		{name: "top level not a mapping", yaml: "- a\n", want: []string{"top level: want a mapping"}},
		{name: "yaml syntax", yaml: "relay: [\n", want: []string{"mailgate.yaml"}},
		{name: "two documents", yaml: "log: {}\n---\nlog: {}\n", want: []string{"more than one YAML document"}},

		{name: "listen without port", yaml: "relay:\n  listen: localhost\n", want: []string{"relay.listen: want host:port"}},
		{name: "empty listen", yaml: "relay:\n  listen: \"\"\n", want: []string{"relay.listen: must not be empty"}},
		{name: "port out of range", yaml: "http:\n  listen: 127.0.0.1:99999\n", want: []string{"http.listen: port"}},
		{name: "named port", yaml: "google:\n  smtp_addr: smtp.gmail.com:submission\n", want: []string{"google.smtp_addr: port"}},
		{name: "dial address without host", yaml: "relay:\n  smarthost: :25\n", want: []string{"relay.smarthost: missing host"}},
		{name: "bad support address", yaml: "tickets:\n  support_addresses: [support@example.com, not-an-email]\n",
			want: []string{`tickets.support_addresses[1]: invalid email address "not-an-email"`}},
		{name: "support address with name", yaml: "tickets:\n  support_addresses: [\"Support <support@example.com>\"]\n",
			want: []string{"tickets.support_addresses[0]: want a bare address"}},
		{name: "bad token threading", yaml: "tickets:\n  token_threading: everyone\n",
			want: []string{`tickets.token_threading: must be one of participants, anyone, got "everyone"`}},
		{name: "bad CIDR", yaml: "relay:\n  allowed_networks: [127.0.0.0/8, 10.0.0.0/33]\n",
			want: []string{`relay.allowed_networks[1]: invalid CIDR "10.0.0.0/33"`}},
		{name: "bad allowed sender", yaml: "relay:\n  allowed_senders: [\"exa mple.com\"]\n",
			want: []string{"relay.allowed_senders[0]"}},
		{name: "plain IMAP to Gmail", yaml: "google:\n  imap_tls: plain\n",
			want: []string{"google.imap_tls: plain (unencrypted) IMAP is only allowed to a loopback host"}},
		{name: "plain SMTP to LAN", yaml: "google:\n  smtp_addr: 10.0.0.5:25\n  smtp_tls: plain\n",
			want: []string{"google.smtp_tls"}},
		{name: "bad TLS mode", yaml: "google:\n  imap_tls: ssl\n", want: []string{"google.imap_tls: must be one of"}},
		{name: "http token URL", yaml: "google:\n  token_url: http://oauth2.googleapis.com/token\n",
			want: []string{"google.token_url: http:// is only allowed to a loopback host"}},
		{name: "empty scopes", yaml: "google:\n  scopes: []\n", want: []string{"google.scopes: must not be empty"}},
		{name: "idle_restart too long", yaml: "fetch:\n  idle_restart: 29m\n", want: []string{"fetch.idle_restart: must be under 29m"}},
		{name: "zero batch", yaml: "fetch:\n  batch_size: 0\n", want: []string{"fetch.batch_size: must be positive"}},
		{name: "negative duration", yaml: "fetch:\n  lease_ttl: -1s\n", want: []string{"fetch.lease_ttl: must be a positive duration"}},
		{name: "zero fetch command timeout", yaml: "fetch:\n  command_timeout: 0s\n", want: []string{"fetch.command_timeout: must be a positive duration"}},
		{name: "relay timeouts beyond RFC 5321", yaml: "relay:\n  connect_timeout: 6m\n  command_timeout: 0s\n  data_timeout: 11m\n  quit_timeout: 1h\n",
			want: []string{"relay.connect_timeout: must be at most 5m", "relay.command_timeout: must be a positive duration",
				"relay.data_timeout: must be at most 10m, what RFC 5321 asks a client to wait for the reply to the final dot", "relay.quit_timeout: must be at most 5m"}},
		{name: "auth limits off", yaml: "relay:\n  auth_max_failures: 0\n  auth_lockout: 0s\n  auth_concurrent_checks: -1\n",
			want: []string{"relay.auth_max_failures: must be positive", "relay.auth_lockout: must be a positive duration", "relay.auth_concurrent_checks: must be 0"}},
		{name: "quota_warn_at above 1", yaml: "relay:\n  quota_warn_at: 1.5\n", want: []string{"relay.quota_warn_at"}},
		{name: "quota_warn_at zero", yaml: "relay:\n  quota_warn_at: 0\n", want: []string{"relay.quota_warn_at"}},
		{name: "cert without key", yaml: "relay:\n  tls_cert: cert.pem\n", want: []string{"relay.tls_key: relay.tls_cert and relay.tls_key must be set together"}},
		{name: "listen_tls without cert", yaml: "relay:\n  listen_tls: 127.0.0.1:4650\n", want: []string{"relay.listen_tls: needs relay.tls_cert"}},
		{name: "user without hash", yaml: "relay:\n  users: [{name: helpdesk}]\n", want: []string{"relay.users[0].password_hash: must not be empty"}},
		{name: "duplicate user", yaml: "relay:\n  users: [{name: a, password_hash: x}, {name: a, password_hash: y}]\n",
			want: []string{`relay.users[1].name: duplicate user "a"`}},
		{name: "smarthost password without user", yaml: "relay:\n  smarthost: mx.example.com:587\n  smarthost_password: pw\n",
			want: []string{"relay.smarthost_password"}, wantNot: "pw\""},
		{name: "bad DKIM key", yaml: "dkim:\n  keys:\n    - {domain: example.com, selector: s1, algorithm: dsa, private_key_file: k.pem}\n",
			want: []string{"dkim.keys[0].algorithm: must be one of rsa, ed25519"}},
		{name: "bad egress IP", yaml: "dkim:\n  egress_ip: 300.1.1.1\n", want: []string{"dkim.egress_ip"}},
		{name: "bad log level", yaml: "log:\n  level: verbose\n", want: []string{`log.level: must be one of debug, info, warn, error, got "verbose"`}},
		{name: "bad redis scheme", yaml: "redis:\n  url: http://127.0.0.1:6379\n", want: []string{`redis.url: scheme "http" not supported`}},
		{name: "redis URL error hides password", yaml: "redis:\n  url: redis://:hunter2@127.0.0.1:6379/abc\n",
			want: []string{"redis.url: database"}, wantNot: "hunter2"},
		{name: "sentinel without addrs", yaml: "redis:\n  master_name: mymaster\n", want: []string{"redis.addrs"}},
		{name: "several problems at once", yaml: "fetch:\n  batch_size: 0\nlog:\n  format: xml\n",
			want: []string{"fetch.batch_size", "log.format"}},

		{name: "unknown env var", env: []string{"MAILGATE_FOO=1"}, want: []string{"MAILGATE_FOO: unknown environment variable"}},
		{name: "env typo", env: []string{"MAILGATE_RELAY_LISTN=x"}, want: []string{`did you mean "MAILGATE_RELAY_LISTEN"`}},
		{name: "env bad int", env: []string{"MAILGATE_FETCH_BATCH_SIZE=many"},
			want: []string{`MAILGATE_FETCH_BATCH_SIZE: fetch.batch_size: invalid integer "many"`}},
		{name: "env list of entries", env: []string{"MAILGATE_RELAY_USERS=a"},
			want: []string{"MAILGATE_RELAY_USERS: relay.users: is a list of entries; set it in the config file"}},
		{name: "env value invalid", env: []string{"MAILGATE_RELAY_LISTEN=nope"}, want: []string{"relay.listen: want host:port"}},
		{name: "env bad CIDR", env: []string{"MAILGATE_RELAY_ALLOWED_NETWORKS=127.0.0.0/8, 10.0.0.0/99"},
			want: []string{"relay.allowed_networks[1]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.yaml != "" {
				path = writeConfig(t, tt.yaml)
			}
			_, err := Load(path, tt.env)
			if err == nil {
				t.Fatalf("Load(%q, %q) = nil error, want %q", tt.yaml, tt.env, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load(%q, %q) error =\n%v\nwant it to contain %q", tt.yaml, tt.env, err, w)
				}
			}
			if tt.wantNot != "" && strings.Contains(err.Error(), tt.wantNot) {
				t.Errorf("Load(%q) error =\n%v\nmust not contain %q", tt.yaml, err, tt.wantNot)
			}
		})
	}
}

func TestLoadNoFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("Load(missing file) = %v, want an error naming the file", err)
	}
	got, err := Load("", nil)
	if err != nil {
		t.Fatalf(`Load("", nil) = %v`, err)
	}
	want := Defaults()
	want.ResolvePaths("", nil)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf(`Load("", nil) differs from Defaults()`)
	}
}

func TestLoadFile(t *testing.T) {
	path := writeConfig(t, `
redis:
  url: rediss://:pw@redis.internal:6380/2
  addrs: [10.0.0.1:26379, 10.0.0.2:26379]
  master_name: mymaster
tickets:
  support_addresses: &support [support@example.com]
google:
  client_id: id.apps.googleusercontent.com
  imap_addr: 127.0.0.1:1143
  imap_tls: plain
  ca_file:           # no value: keeps the default
fetch:
  idle: false
  idle_restart: 28m30s
relay:
  <<: {max_recipients: 50, workers: 8}
  workers: 2         # the mapping's own key beats the merged one
  listen: ":2525"
  tls_cert: relay.pem  # beyond loopback, AUTH needs TLS
  tls_key: relay.key
  allowed_networks: []
  allowed_senders: *support
  users:
    - name: helpdesk
      password_hash: $2a$10$abc
  retry_schedule: [30s, 90m]
  quota_warn_at: 1
dkim:
  keys:
    - domain: example.com
      selector: s2024
      algorithm: ed25519
      private_key_file: dkim.pem
log:
  format: json
shutdown_grace: 2m
`)
	c, err := Load(path, []string{"HOME=/root", "MAILGATE_CONFIG=/etc/mailgate.yaml"})
	if err != nil {
		t.Fatalf("Load = %v", err)
	}

	want := Defaults()
	want.Redis.URL = "rediss://:pw@redis.internal:6380/2"
	want.Redis.Addrs = []string{"10.0.0.1:26379", "10.0.0.2:26379"}
	want.Redis.MasterName = "mymaster"
	want.Tickets.SupportAddresses = []string{"support@example.com"}
	want.Google.ClientID = "id.apps.googleusercontent.com"
	want.Google.IMAPAddr = "127.0.0.1:1143"
	want.Google.IMAPTLS = tlsmode.Plain
	want.Fetch.IDLE = false
	want.Fetch.IDLERestart = Duration(28*time.Minute + 30*time.Second)
	want.Relay.MaxRecipients = 50
	want.Relay.Workers = 2
	want.Relay.Listen = ":2525"
	want.Relay.TLSCert, want.Relay.TLSKey = "relay.pem", "relay.key"
	want.Relay.AllowedNetworks = nil
	want.Relay.AllowedSenders = []string{"support@example.com"}
	want.Relay.Users = []RelayUser{{Name: "helpdesk", PasswordHash: "$2a$10$abc"}}
	want.Relay.RetrySchedule = []Duration{Duration(30 * time.Second), Duration(90 * time.Minute)}
	want.Relay.QuotaWarnAt = 1
	want.DKIM.Keys = []DKIMKey{{Domain: "example.com", Selector: "s2024", Algorithm: DKIMEd25519, PrivateKeyFile: "dkim.pem"}}
	want.Log.Format = "json"
	want.ShutdownGrace = Duration(2 * time.Minute)
	want.ResolvePaths(path, nil) // relay.pem and the others: next to the file
	if !reflect.DeepEqual(c, want) {
		gotY, _ := c.YAML()
		wantY, _ := want.YAML()
		t.Fatalf("Load =\n%s\nwant\n%s", gotY, wantY)
	}
}

func TestEnvOverrides(t *testing.T) {
	path := writeConfig(t, "relay:\n  listen: 127.0.0.1:2601\n  workers: 3\n")
	c, err := Load(path, []string{
		"PATH=/usr/bin",
		"MAILGATE_CONFIG=" + path,
		"MAILGATE_RELAY_LISTEN=127.0.0.1:2600",
		"MAILGATE_REDIS_URL=unix:///run/redis/redis.sock",
		"MAILGATE_LOG_LEVEL=debug",
		"MAILGATE_SHUTDOWN_GRACE=1m",
		"MAILGATE_FETCH_IDLE=false",
		"MAILGATE_RELAY_QUOTA_WARN_AT=0.75",
		"MAILGATE_RELAY_ALLOWED_NETWORKS=127.0.0.0/8, 10.0.0.0/8",
		"MAILGATE_RELAY_RETRY_SCHEDULE=1m,10m",
		"MAILGATE_TICKETS_SUPPORT_ADDRESSES=",
		"MAILGATE_GOOGLE_CLIENT_SECRET=s3cret",
	})
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	checks := []struct {
		key       string
		got, want any
	}{
		{"relay.listen", c.Relay.Listen, "127.0.0.1:2600"},
		{"relay.workers (file, not overridden)", c.Relay.Workers, 3},
		{"redis.url", c.Redis.URL, "unix:///run/redis/redis.sock"},
		{"log.level", c.Log.Level, "debug"},
		{"shutdown_grace", c.ShutdownGrace, Duration(time.Minute)},
		{"fetch.idle", c.Fetch.IDLE, false},
		{"relay.quota_warn_at", c.Relay.QuotaWarnAt, 0.75},
		{"relay.allowed_networks", c.Relay.AllowedNetworks, []string{"127.0.0.0/8", "10.0.0.0/8"}},
		{"relay.retry_schedule", c.Relay.RetrySchedule, []Duration{Duration(time.Minute), Duration(10 * time.Minute)}},
		{"tickets.support_addresses", c.Tickets.SupportAddresses, []string(nil)},
		{"google.client_secret", c.Google.ClientSecret, "s3cret"},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %#v, want %#v", ck.key, ck.got, ck.want)
		}
	}
}

func TestSet(t *testing.T) {
	c := Defaults()
	for _, kv := range [][2]string{
		{"relay.listen", "0.0.0.0:25"},
		{"tickets.max_raw_bytes", "1_048_576"},
		{"fetch.poll_interval", "90s"},
		{"dkim.egress_ip", "192.0.2.1"},
	} {
		if err := c.Set(kv[0], kv[1]); err != nil {
			t.Fatalf("Set(%q, %q) = %v", kv[0], kv[1], err)
		}
	}
	if c.Relay.Listen != "0.0.0.0:25" || c.Tickets.MaxRawBytes != 1<<20 ||
		c.Fetch.PollInterval.Duration() != 90*time.Second || c.DKIM.EgressIP != "192.0.2.1" {
		t.Fatalf("Set did not apply: %+v", c)
	}

	errs := []struct{ key, value, want string }{
		{"relay.listn", "x", `relay.listn: unknown key (did you mean "relay.listen"?)`},
		{"nosuch", "x", "nosuch: unknown key"},
		{"relay", "x", "relay: unknown key"},
		{"dkim.keys", "x", "dkim.keys: is a list of entries"},
		{"fetch.idle", "maybe", `fetch.idle: invalid boolean "maybe"`},
		{"relay.quota_warn_at", "most", `relay.quota_warn_at: invalid number "most"`},
		{"fetch.max_attempts", "99999999999999999999", "fetch.max_attempts: invalid integer"},
	}
	for _, e := range errs {
		if err := c.Set(e.key, e.value); err == nil || !strings.Contains(err.Error(), e.want) {
			t.Errorf("Set(%q, %q) = %v, want error containing %q", e.key, e.value, err, e.want)
		}
	}
}

func TestKeys(t *testing.T) {
	keys := Keys()
	if !slices.IsSorted(keys) {
		t.Errorf("Keys() not sorted: %q", keys)
	}
	for _, k := range []string{"relay.listen", "redis.url", "shutdown_grace", "google.scopes", "relay.retry_schedule"} {
		if !slices.Contains(keys, k) {
			t.Errorf("Keys() lacks %q", k)
		}
	}
	for _, k := range []string{"relay.users", "dkim.keys"} {
		if slices.Contains(keys, k) {
			t.Errorf("Keys() has %q, which Set rejects", k)
		}
	}
	// Every key must be settable, and map to its own env var.
	env := map[string]string{}
	for _, k := range allKeys() {
		if prev, dup := env[EnvVar(k)]; dup {
			t.Errorf("keys %q and %q share env var %s", prev, k, EnvVar(k))
		}
		env[EnvVar(k)] = k
	}
	if got := EnvVar("relay.max_message_bytes"); got != "MAILGATE_RELAY_MAX_MESSAGE_BYTES" {
		t.Errorf("EnvVar(relay.max_message_bytes) = %q", got)
	}
}

func TestMasked(t *testing.T) {
	c := Defaults()
	c.Google.ClientID = "id.apps.googleusercontent.com"
	c.Google.ClientSecret = "client-s3cret"
	c.Relay.Users = []RelayUser{{Name: "helpdesk", PasswordHash: "$2a$10$hash"}, {Name: "nohash"}}
	c.Relay.SmarthostUser = "relayuser"
	c.Relay.SmarthostPassword = "smart-s3cret"
	c.Redis.URL = "redis://default:redis-s3cret@127.0.0.1:6379/0"

	m := c.Masked()
	if m.Google.ClientSecret != masked || m.Relay.Users[0].PasswordHash != masked || m.Relay.SmarthostPassword != masked {
		t.Errorf("Masked() kept a secret: %+v %+v", m.Google, m.Relay)
	}
	if m.Relay.Users[1].PasswordHash != "" {
		t.Errorf("Masked() filled an empty secret: %q", m.Relay.Users[1].PasswordHash)
	}
	if want := "redis://default:********@127.0.0.1:6379/0"; m.Redis.URL != want {
		t.Errorf("Masked().Redis.URL = %q, want %q", m.Redis.URL, want)
	}
	if m.Google.ClientID != c.Google.ClientID || m.Relay.Users[0].Name != "helpdesk" || m.Relay.SmarthostUser != "relayuser" {
		t.Errorf("Masked() changed a non-secret")
	}
	if c.Google.ClientSecret != "client-s3cret" || c.Relay.Users[0].PasswordHash != "$2a$10$hash" ||
		c.Redis.URL != "redis://default:redis-s3cret@127.0.0.1:6379/0" {
		t.Errorf("Masked() changed the original")
	}
	m.Relay.AllowedNetworks[0] = "10.0.0.0/8"
	if c.Relay.AllowedNetworks[0] != "127.0.0.0/8" {
		t.Errorf("Masked() shares slices with the original")
	}
	out, err := m.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"client-s3cret", "$2a$10$hash", "smart-s3cret", "redis-s3cret"} {
		if strings.Contains(string(out), s) {
			t.Errorf("Masked().YAML() contains %q:\n%s", s, out)
		}
	}
	if got := Defaults().Masked(); !reflect.DeepEqual(got, Defaults()) {
		t.Errorf("Defaults().Masked() differs from Defaults(): nothing to mask")
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	c := Defaults()
	c.Relay.Users = []RelayUser{{Name: "helpdesk", PasswordHash: "$2a$10$abc"}}
	c.DKIM.Keys = []DKIMKey{{Domain: "example.com", Selector: "s1", Algorithm: DKIMRSA, PrivateKeyFile: "k.pem"}}
	c.Fetch.IDLERestart = Duration(90 * time.Second)
	c.Redis.Prefix = "mg: {x}"
	c.Relay.QuotaWarnAt = 0.333
	data, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, string(data))
	got, err := Load(path, nil)
	if err != nil {
		t.Fatalf("Load(YAML()) = %v\n%s", err, data)
	}
	c.ResolvePaths(path, nil)
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("Load(YAML()) differs:\n%s", data)
	}
}

func TestDurationString(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{30 * time.Second, "30s"},
		{time.Minute, "1m"},
		{25 * time.Minute, "25m"},
		{90 * time.Minute, "1h30m"},
		{120 * time.Hour, "120h"},
		{time.Minute + 500*time.Millisecond, "1m0.5s"},
		{250 * time.Millisecond, "250ms"},
	} {
		if got := Duration(tt.d).String(); got != tt.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tt.d, got, tt.want)
		}
		if back, err := parseDuration(Duration(tt.d).String()); err != nil || back.Duration() != tt.d {
			t.Errorf("parseDuration(%q) = %v, %v, want %v", Duration(tt.d).String(), back, err, tt.d)
		}
	}
}

func TestDurationUnmarshalYAML(t *testing.T) {
	var v struct {
		D Duration `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("d: 25m\n"), &v); err != nil || v.D.Duration() != 25*time.Minute {
		t.Fatalf("yaml.Unmarshal(d: 25m) = %v, %v", v.D, err)
	}
	if err := yaml.Unmarshal([]byte("d: abc\n"), &v); err == nil || !strings.Contains(err.Error(), `invalid duration "abc"`) {
		t.Fatalf("yaml.Unmarshal(d: abc) = %v, want invalid duration", err)
	}
}

// FuzzDecode checks that no file makes the loader panic, and that whatever
// loads can be validated and rendered.
func FuzzDecode(f *testing.F) {
	example, err := os.ReadFile(examplePath)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte("relay:\n  users:\n    - name: a\n      password_hash: b\n  <<: [{workers: 1}, {workers: 2}]\n"))
	f.Add([]byte("a: &a [x, x]\nb: &b [*a, *a]\nrelay: {<<: *b}\n"))
	f.Add([]byte("fetch: {poll_interval: 60, batch_size: 1e3, idle: ~}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		root, err := parseFile("fuzz.yaml", data)
		if err != nil {
			return
		}
		c := Defaults()
		_ = decodeNode("fuzz.yaml", root, c)
		_ = c.Validate()
		_ = c.Masked()
		if _, err := c.YAML(); err != nil {
			t.Fatalf("YAML() = %v", err)
		}
	})
}
