package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// closedRedisURL is a Redis URL where nothing listens: a command that got
// past the configuration checks would fail there with exit 1, not 2.
func closedRedisURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "redis://" + addr + "/0"
}

// Whatever serve refuses at start-up because of the configuration,
// config check refuses too, and both exit 2 naming the key.
func TestConfigCheckRefusesWhatServeRefuses(t *testing.T) {
	redisURL := closedRedisURL(t)
	for _, tt := range []struct {
		name, yaml, key string
		files           map[string]string // name -> content, next to the config
	}{
		{name: "missing DKIM key file", key: "dkim.keys[0]",
			yaml: "dkim:\n  keys:\n    - {domain: example.com, selector: s1, algorithm: rsa, private_key_file: missing.pem}\n"},
		{name: "missing TLS certificate", key: "relay.tls_cert",
			yaml: "relay:\n  tls_cert: cert.pem\n  tls_key: key.pem\n"},
		{name: "missing ca_file", key: "google.ca_file",
			yaml: "google:\n  ca_file: ca.pem\n"},
		{name: "ca_file without a certificate", key: "google.ca_file",
			yaml: "google:\n  ca_file: ca.pem\n", files: map[string]string{"ca.pem": "not a certificate\n"}},
		{name: "exposed relay", key: "relay.listen",
			yaml: "relay:\n  listen: 0.0.0.0:2525\n"},
		{name: "key file readable by others", key: "secrets.key_file",
			yaml: "secrets:\n  key_file: mg.key\n", files: map[string]string{"mg.key": strings.Repeat("k", 32)}},
		// A key file that could never be created: its "directory" is a
		// file (as it is a root-owned /etc/mailgate for the mailgate
		// user, which a test run as root cannot reproduce).
		{name: "key file that cannot be created", key: "secrets.key_file",
			yaml: "secrets:\n  key_file: notadir/mg.key\n", files: map[string]string{"notadir": "x"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfgFile := filepath.Join(dir, "mailgate.yaml")
			if err := os.WriteFile(cfgFile, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			for name, content := range tt.files {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				os.Chmod(p, 0o644) // past the umask
			}
			t.Chdir(t.TempDir()) // the files are found from the config's directory
			for _, cmd := range [][]string{{"config", "check"}, {"serve"}} {
				var out, errOut bytes.Buffer
				args := append([]string{"mailgate", "--config", cfgFile, "--redis-url", redisURL}, cmd...)
				code := run(args, &out, &errOut)
				if code != exitConfig || !strings.Contains(errOut.String(), tt.key) {
					t.Errorf("mailgate %s: exit %d, want %d naming %s\nstderr: %s", strings.Join(cmd, " "), code, exitConfig, tt.key, errOut.String())
				}
			}
		})
	}
}
