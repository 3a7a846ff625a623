package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/imapfetch"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/metrics"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
	"github.com/mailgate/mailgate/tickets"
)

const support = "support@acme.example"

// serve runs s on a real loopback listener until the test ends, and checks
// that Serve returns nil after Shutdown.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve after Shutdown = %v, want nil", err)
		}
	})
	return "http://" + l.Addr().String()
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func TestHealthzAndReadyz(t *testing.T) {
	var notReady atomic.Pointer[error]
	base := serve(t, New(Options{Ready: func(ctx context.Context) error {
		if e := notReady.Load(); e != nil {
			return *e
		}
		return nil
	}}))

	if code, body, _ := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	if code, body, _ := get(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz = %d %q, want 200 ready", code, body)
	}
	err := errors.New("redis: dial tcp 127.0.0.1:6379: connection refused")
	notReady.Store(&err)
	if code, body, _ := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "connection refused") {
		t.Errorf("/readyz with Redis down = %d %q, want 503 with the reason", code, body)
	}
	if code, body, _ := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz with Redis down = %d %q, want 200 ok: the process still runs", code, body)
	}
	if code, _, _ := get(t, base+"/nothing"); code != 404 {
		t.Errorf("/nothing = %d, want 404", code)
	}
	resp, err2 := http.Post(base+"/healthz", "text/plain", nil)
	if err2 != nil {
		t.Fatal(err2)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", resp.StatusCode)
	}
}

func TestMetricsExposeHookCounters(t *testing.T) {
	m := metrics.New(metrics.Options{})
	base := serve(t, New(Options{Registry: m.Registry()}))

	m.Poll(support, imapfetch.Report{Fetched: 5, InitialImport: 1, Created: 2, Comments: 1, Duplicates: 1, Suppressed: 1, Quarantined: 1, Errors: 1}, 1500*time.Millisecond, nil)
	m.Poll(support, imapfetch.Report{}, 2*time.Second, errors.New("connect: refused"))
	m.Poll(support, imapfetch.Report{Fetched: 1, Created: 1}, 0, nil) // cut short by shutdown
	m.Suppressed(support, tickets.NoiseAutoReply)
	m.RelayAccept(true, "")
	m.RelayAccept(true, "")
	m.RelayAccept(false, smtprelay.RejectSender)
	m.Delivery(smtprelay.RouteGmail, smtprelay.Delivered)
	m.Delivery(smtprelay.RouteDirect, smtprelay.Bounced)
	m.TokenRefresh(support, nil)
	m.TokenRefresh(support, fmt.Errorf("access token: %w", oauth.ErrInvalidGrant))
	m.TokenRefresh(support, errors.New("token endpoint unreachable"))

	code, body, h := get(t, base+"/metrics")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics = %d %s", code, h.Get("Content-Type"))
	}
	a := `{account="` + support + `"}`
	for _, want := range []string{
		"mailgate_mails_fetched_total" + a + " 6",
		"mailgate_tickets_created_total" + a + " 3",
		"mailgate_comments_threaded_total" + a + " 1",
		"mailgate_duplicates_skipped_total" + a + " 1",
		"mailgate_mails_quarantined_total" + a + " 1",
		"mailgate_ingest_failures_total" + a + " 1",
		`mailgate_mails_suppressed_total{account="` + support + `",reason="auto-reply"} 1`,
		"mailgate_poll_duration_seconds_count" + a + " 1",
		"mailgate_poll_duration_seconds_sum" + a + " 1.5",
		"mailgate_poll_errors_total" + a + " 1",
		"mailgate_relay_accepted_total 2",
		`mailgate_relay_rejected_total{reason="sender"} 1`,
		`mailgate_relay_rejected_total{reason="auth"} 0`,
		`mailgate_relay_deliveries_total{result="delivered",route="gmail"} 1`,
		`mailgate_relay_deliveries_total{result="bounced",route="direct"} 1`,
		`mailgate_relay_deliveries_total{result="deferred",route="smarthost"} 0`,
		`mailgate_token_refreshes_total 3`,
		`mailgate_token_refresh_failures_total{kind="invalid_grant"} 1`,
		`mailgate_token_refresh_failures_total{kind="other"} 1`,
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(body, "\n"+want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "mailgate_state_up") {
		t.Error("/metrics has state gauges without Options.State")
	}
}

// TestStatusAndStateGauges: /status and the state gauges of /metrics read
// Redis, so they show what every replica shares; with Redis gone /status
// says so and /metrics still answers.
func TestStatusAndStateGauges(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	box, err := oauth.LoadOrCreateKey(filepath.Join(t.TempDir(), "key"))
	if err != nil {
		t.Fatal(err)
	}
	acc := accounts.New(rdb, accounts.Options{Box: box})
	if _, err := acc.Connect(ctx, accounts.Account{Email: support}, "refresh-token"); err != nil {
		t.Fatal(err)
	}
	if err := acc.RecordPoll(ctx, support, 3); err != nil {
		t.Fatal(err)
	}
	st := tickets.NewStore(rdb, tickets.Options{SupportAddresses: acc.SupportAddresses})
	q := smtprelay.NewQueue(rdb, smtprelay.QueueOptions{})
	m := &smtprelay.Message{From: support, To: []string{"alice@customer.example"}, Data: []byte("Subject: hi\r\n\r\nhi\r\n")}
	if err := q.Put(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := st.Publish(ctx, tickets.EventQuotaWarning, 0, map[string]any{"account": support, "used": 9, "limit": 10, "message": "nearly there"}); err != nil {
		t.Fatal(err)
	}

	limits := func(accounts.Kind) sendlimit.Limits { return sendlimit.Limits{Messages: 10} }
	src := status.Sources{Accounts: acc, Queue: q, Quota: smtprelay.NewQuota(q), Limits: limits, Events: rdb, EventsKey: st.Key("events")}
	mx := metrics.New(metrics.Options{State: &src, Timeout: time.Second})
	base := serve(t, New(Options{
		Ready:    func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		Status:   func(ctx context.Context) (any, error) { return src.Gather(ctx) },
		Registry: mx.Registry(),
		Timeout:  2 * time.Second,
	}))

	code, body, h := get(t, base+"/status")
	if code != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("/status = %d %s: %s", code, h.Get("Content-Type"), body)
	}
	// The shape the CLI and monitoring scripts read.
	var shape map[string]any
	if err := json.Unmarshal([]byte(body), &shape); err != nil {
		t.Fatalf("/status is not JSON: %v\n%s", err, body)
	}
	for _, k := range []string{"at", "accounts", "queue", "warnings"} {
		if _, ok := shape[k]; !ok {
			t.Errorf("/status lacks %q:\n%s", k, body)
		}
	}
	acct := shape["accounts"].([]any)[0].(map[string]any)
	for _, k := range []string{"email", "kind", "state", "last_poll", "imported", "quarantined", "quota"} {
		if _, ok := acct[k]; !ok {
			t.Errorf("/status account lacks %q:\n%s", k, body)
		}
	}
	for _, k := range []string{"used", "limit", "blocked"} {
		if _, ok := acct["quota"].(map[string]any)[k]; !ok {
			t.Errorf("/status quota lacks %q:\n%s", k, body)
		}
	}
	for _, k := range []string{"depth", "oldest", "oldest_age_seconds"} {
		if _, ok := shape["queue"].(map[string]any)[k]; !ok {
			t.Errorf("/status queue lacks %q:\n%s", k, body)
		}
	}
	var got status.Status
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Accounts) != 1 || got.Accounts[0].Email != support || got.Accounts[0].State != accounts.StateConnected ||
		got.Accounts[0].Quota.Limit != 10 || got.Accounts[0].Imported != 3 || got.Accounts[0].LastPoll.IsZero() {
		t.Errorf("/status accounts = %+v, want %s connected, imported 3, polled, limit 10", got.Accounts, support)
	}
	if got.Queue.Depth != 1 || got.Queue.Oldest.IsZero() {
		t.Errorf("/status queue = %+v, want the queued message", got.Queue)
	}
	if len(got.Warnings) != 1 || got.Warnings[0].Type != tickets.EventQuotaWarning || got.Warnings[0].Message != "nearly there" {
		t.Errorf("/status warnings = %+v, want the quota warning", got.Warnings)
	}

	_, body, _ = get(t, base+"/metrics")
	a := `{account="` + support + `"}`
	for _, want := range []string{
		"mailgate_state_up 1",
		"mailgate_relay_queue_depth 1",
		"mailgate_relay_queue_oldest_age_seconds ",
		"mailgate_quota_used" + a + " 0",
		"mailgate_quota_limit" + a + " 10",
		"mailgate_quota_blocked" + a + " 0",
		`mailgate_account_state{account="` + support + `",state="connected"} 1`,
		`mailgate_account_state{account="` + support + `",state="error"} 0`,
		"mailgate_poll_last_success_timestamp_seconds" + a + " ",
		"mailgate_account_quarantined_mails" + a + " 0",
		"mailgate_account_imported_mails" + a + " 3",
	} {
		if !strings.Contains(body, "\n"+want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	srv.Kill()
	if code, body, _ := get(t, base+"/status"); code != 503 || !strings.Contains(body, `"error"`) {
		t.Errorf("/status with Redis down = %d %s, want 503 with the error", code, body)
	}
	if code, _, _ := get(t, base+"/readyz"); code != 503 {
		t.Errorf("/readyz with Redis down = %d, want 503", code)
	}
	code, body, _ = get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "\nmailgate_state_up 0") || !strings.Contains(body, "\nmailgate_relay_accepted_total 0") {
		t.Errorf("/metrics with Redis down = %d, want 200 with state_up 0 and the counters:\n%s", code, body)
	}
}
