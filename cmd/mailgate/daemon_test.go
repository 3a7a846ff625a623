package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExposureRefusedByCheckAndServe: the rule for an exposed relay is the
// configuration's, so `config check` and `serve` refuse the same file, exit
// 2, and name the key, before anything listens or dials Redis.
func TestExposureRefusedByCheckAndServe(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "exposed.yaml")
	// No TLS, no AUTH, and two halves of the Internet as "allowed networks".
	os.WriteFile(bad, []byte("relay:\n  listen: 0.0.0.0:2525\n  allowed_networks: [0.0.0.0/1, 128.0.0.0/1]\n"), 0o600)
	for _, cmd := range []string{"config check", "serve"} {
		args := append([]string{"--config", bad}, strings.Fields(cmd)...)
		code, _, stderr := mailgate(t, args...)
		if code != 2 || !strings.Contains(stderr, "relay.listen:") || !strings.Contains(stderr, "relay.allowed_networks[0]:") {
			t.Errorf("%s of an exposed relay = exit %d, stderr %q; want 2 naming relay.listen and relay.allowed_networks[0]", cmd, code, stderr)
		}
	}
}

// TestHTTPTokenInConfigCheckAndServe: an HTTP listener beyond loopback
// without http.token is refused by both commands; with one, config check
// passes and prints it masked.
func TestHTTPTokenInConfigCheckAndServe(t *testing.T) {
	t.Setenv("MAILGATE_HTTP_LISTEN", "0.0.0.0:8025")
	for _, cmd := range []string{"config check", "serve"} {
		code, _, stderr := mailgate(t, strings.Fields(cmd)...)
		if code != 2 || !strings.Contains(stderr, "http.listen:") || !strings.Contains(stderr, "http.token") {
			t.Errorf("%s with http.listen beyond loopback and no token = exit %d, %q; want 2 naming http.listen and http.token", cmd, code, stderr)
		}
	}
	const token = "tok-0123456789abcdef-not-for-print"
	t.Setenv("MAILGATE_HTTP_TOKEN", token)
	code, out, stderr := mailgate(t, "config", "check")
	if code != 0 || strings.Contains(out+stderr, token) || !strings.Contains(out, "token: '********'") {
		t.Errorf("config check with http.token = exit %d, stdout %q, stderr %q; want 0 with the token masked", code, out, stderr)
	}
}
