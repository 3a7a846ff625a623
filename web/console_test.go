package web

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
	"github.com/mailgate/mailgate/tickets"
)

const (
	busy  = "busy@acme.example"  // over its warning threshold
	quiet = "quiet@acme.example" // sent nothing
)

// consoleServer fills a real Redis with two accounts, one of them over its
// quota warning threshold (9 of 10, warning at 8), a fetcher process, a
// deferred message, a bounced one and a quota warning event, and returns the web handler serving it.
func consoleServer(t *testing.T, token string) *Server {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	box, err := oauth.LoadOrCreateKey(filepath.Join(t.TempDir(), "key"))
	if err != nil {
		t.Fatal(err)
	}
	acc := accounts.New(rdb, accounts.Options{Box: box})
	for _, a := range []string{busy, quiet} {
		if _, err := acc.Connect(ctx, accounts.Account{Email: a}, "refresh-token"); err != nil {
			t.Fatal(err)
		}
	}
	if err := acc.SetAliases(ctx, busy, []string{"help@acme.example", "sales@acme.example"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := acc.RecordPoll(ctx, busy, 4); err != nil {
		t.Fatal(err)
	}
	// One fetcher process polls busy; another's heartbeat ran out.
	if _, err := acc.Heartbeat(ctx, accounts.Holder{Host: "fetch-a", PID: 4242, Token: "t1"}, 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := acc.Heartbeat(ctx, accounts.Holder{Host: "fetch-gone", PID: 9, Token: "t2"}, 1, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	q := smtprelay.NewQueue(rdb, smtprelay.QueueOptions{})
	quota := smtprelay.NewQuota(q)
	limits := func(accounts.Kind) sendlimit.Limits { return sendlimit.Limits{Messages: 10} }
	for i := range 9 {
		if _, err := quota.Reserve(ctx, busy, fmt.Sprint("sent-", i), 1, 0, limits(accounts.KindGmail), 0.8); err != nil {
			t.Fatal(err)
		}
	}
	m := &smtprelay.Message{From: busy, To: []string{"alice@customer.example"}, Data: []byte("Subject: hi\r\n\r\nhi\r\n")}
	if err := q.Put(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.NextAttempt, m.LastError = time.Now().Add(10*time.Minute), "451 4.7.0 try again later"
	if err := q.Defer(ctx, m); err != nil {
		t.Fatal(err)
	}
	b := &smtprelay.Message{From: busy, To: []string{"nobody@customer.example"}, Data: []byte("Subject: hi\r\n\r\nhi\r\n")}
	if err := q.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.State, b.LastError = smtprelay.StateBounced, "550 5.1.1 no such user"
	if err := q.Finish(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	st := tickets.NewStore(rdb, tickets.Options{SupportAddresses: acc.SupportAddresses})
	if err := st.Publish(ctx, tickets.EventQuotaWarning, 0, map[string]any{"account": busy, "used": 8, "limit": 10, "message": "busy@acme.example sent 8 of 10 today"}); err != nil {
		t.Fatal(err)
	}
	src := status.Sources{Accounts: acc, Queue: q, Quota: quota, Limits: limits, Events: rdb, EventsKey: st.Key("events")}
	return New(Options{
		Status:  func(ctx context.Context) (any, error) { return src.Gather(ctx) },
		Token:   token,
		Version: "v1.2.3-test",
		Redis:   "redis://127.0.0.1 prefix mg:",
		WarnAt:  0.8,
		Timeout: 2 * time.Second,
	})
}

// consoleTexts are what an admin must read on the console of consoleServer.
var consoleTexts = []string{
	"mailgate console", "v1.2.3-test", "redis://127.0.0.1 prefix mg:",
	busy, quiet, "connected",
	"sends as help@acme.example, sales@acme.example", // busy's aliases
	"9 / 10 sent", "warning at 8", "over the warning threshold", "Close to Gmail's daily limit",
	"next place frees in 23h", // busy's first message sent leaves the window in a day
	"0 / 10 sent", "never",    // quiet: nothing sent, never polled
	"<br>fetch-a:4242 polls 1 of 2 accounts, last seen ", // one line per live fetcher process
	"1 message(s) waiting",
	"Next try", "in 9m", "451 4.7.0 try again later", // the deferred message
	"1 bounced today",
	"quota.warning", "busy@acme.example sent 8 of 10 today",
	"/healthz", "/status",
}

// TestConsoleShowsAccountsQuotaQueueWarnings renders the page from real
// Redis state and reads it as an admin would.
func TestConsoleShowsAccountsQuotaQueueWarnings(t *testing.T) {
	base := serve(t, consoleServer(t, ""))
	code, body, h := get(t, base+"/")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s:\n%s", code, h.Get("Content-Type"), body)
	}
	for _, want := range consoleTexts {
		if !strings.Contains(body, want) {
			t.Errorf("console lacks %q:\n%s", want, body)
		}
	}
	if !strings.Contains(body, `http-equiv="refresh"`) || strings.Contains(body, "<script") {
		t.Errorf("console must reload itself and need no JavaScript:\n%s", body)
	}
	if strings.Contains(body, "fetch-gone") {
		t.Errorf("console lists a fetcher whose heartbeat ran out:\n%s", body)
	}
	// Only the busy account's row is marked.
	if n := strings.Count(body, `<tr class="warn">`); n != 1 {
		t.Errorf("%d rows marked as warnings, want 1 (busy only):\n%s", n, body)
	}
}

// TestConsoleToken: with http.token set, the console answers only the
// token, as a Bearer header, ?token= or the cookie ?token= sets.
func TestConsoleToken(t *testing.T) {
	const token = "console-token-0123456789"
	base := serve(t, consoleServer(t, token))
	if code, body, _ := get(t, base+"/"); code != http.StatusUnauthorized || strings.Contains(body, busy) {
		t.Errorf("GET / without token = %d %q, want 401 and nothing shown", code, body)
	}
	if code, body, _ := get(t, base+"/?token=wrong"); code != http.StatusUnauthorized || strings.Contains(body, busy) {
		t.Errorf("GET /?token=wrong = %d, want 401", code)
	}
	if code, body, _ := getWith(t, base+"/", "Bearer "+token); code != 200 || !strings.Contains(body, busy) {
		t.Errorf("GET / with Bearer = %d, want 200 with the accounts", code)
	}
	resp, err := http.Get(base + "/?token=" + token)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == tokenCookie {
			cookie = c
		}
	}
	if resp.StatusCode != 200 || cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("GET /?token= = %d, cookie %+v; want 200 and an HttpOnly SameSite=Strict cookie", resp.StatusCode, cookie)
	}
	// The reload and the footer's links carry the cookie, not the token.
	req, _ := http.NewRequest("GET", base+"/status", nil)
	req.AddCookie(&http.Cookie{Name: tokenCookie, Value: cookie.Value})
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /status with the cookie = %d, want 200", resp.StatusCode)
	}
}
