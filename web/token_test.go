package web

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// getWith sends a GET with the Authorization header auth ("" for none).
func getWith(t *testing.T, url, auth string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestTokenGuardsStatusAndMetrics: with http.token set, /status (customer
// addresses, quarantined mail) and /metrics answer only the Bearer token;
// the probes stay open.
func TestTokenGuardsStatusAndMetrics(t *testing.T) {
	const token = "0123456789abcdef-secret"
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "mailgate_probe_total", Help: "x"}))
	status := func(context.Context) (any, error) {
		return map[string]string{"quarantined_from": "customer@example.net"}, nil
	}
	base := serve(t, New(Options{Status: status, Registry: reg, Token: token}))

	for _, path := range []string{"/status", "/metrics"} {
		for _, auth := range []string{"", "Bearer wrong-token-of-some-length", "Basic " + token, "Bearer " + token[:len(token)-1]} {
			code, body, h := getWith(t, base+path, auth)
			if code != http.StatusUnauthorized || strings.Contains(body, "customer@") || strings.Contains(body, "mailgate_probe") {
				t.Errorf("GET %s with %q = %d %q, want 401 and nothing shown", path, auth, code, body)
			}
			if got := h.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("GET %s 401: WWW-Authenticate = %q, want Bearer (RFC 6750)", path, got)
			}
		}
	}
	if code, body, _ := getWith(t, base+"/status", "Bearer "+token); code != 200 || !strings.Contains(body, "customer@example.net") {
		t.Errorf("/status with the token = %d %q, want 200 and the status", code, body)
	}
	if code, body, _ := getWith(t, base+"/metrics", "bearer "+token); code != 200 || !strings.Contains(body, "mailgate_probe_total") {
		t.Errorf("/metrics with the token (scheme in any case) = %d %q, want 200 and the metrics", code, body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _, _ := getWith(t, base+path, ""); code != 200 {
			t.Errorf("GET %s without a token = %d, want 200: probes stay open", path, code)
		}
	}
}

// TestNoTokenLeavesStatusOpen: without http.token (the loopback default)
// /status answers as before.
func TestNoTokenLeavesStatusOpen(t *testing.T) {
	base := serve(t, New(Options{Status: func(context.Context) (any, error) { return map[string]int{"queue": 3}, nil }}))
	if code, body, _ := getWith(t, base+"/status", ""); code != 200 || !strings.Contains(body, `"queue": 3`) {
		t.Errorf("/status without a token configured = %d %q, want 200", code, body)
	}
}

// TestPprofBehindToken: /debug/pprof/ exists only with Options.Pprof, and
// then answers only the Bearer token, like /status.
func TestPprofBehindToken(t *testing.T) {
	const token = "0123456789abcdef-secret"
	off := serve(t, New(Options{Token: token}))
	if code, _, _ := getWith(t, off+"/debug/pprof/heap", "Bearer "+token); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/heap without Pprof = %d, want 404", code)
	}
	on := serve(t, New(Options{Token: token, Pprof: true}))
	if code, _, _ := getWith(t, on+"/debug/pprof/heap", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /debug/pprof/heap without the token = %d, want 401", code)
	}
	if code, body, _ := getWith(t, on+"/debug/pprof/goroutine?debug=1", "Bearer "+token); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("GET /debug/pprof/goroutine with the token = %d %.80q, want 200 and the profile", code, body)
	}
}
