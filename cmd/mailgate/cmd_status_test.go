package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
	"github.com/mailgate/mailgate/web"
)

// TestStatusViewsAgree builds both views from one Redis: the HTTP /status
// of a serve whose relay applies a daily Gmail limit of 3 (as the demo
// does), and `mailgate status` run with the default configuration (limit
// 500). Both must show the limit the relay enforces.
func TestStatusViewsAgree(t *testing.T) {
	ctx := context.Background()
	e := newAccountsEnv(t)
	const acct = "support@example.com"
	e.addAccount(acct, 0)

	serveCfg := config.Defaults()
	serveCfg.Relay.GmailDailyLimit = 3
	rdb := e.redis.Client(t)
	q := smtprelay.NewQueue(rdb, smtprelay.QueueOptions{Prefix: serveCfg.Redis.Prefix})
	quota := smtprelay.NewQuota(q)
	lim := sendlimit.Limits{Messages: serveCfg.Relay.GmailDailyLimit}
	for i := range 3 {
		if _, err := quota.Reserve(ctx, acct, fmt.Sprint("m", i), 1, 0, lim, serveCfg.Relay.QuotaWarnAt); err != nil {
			t.Fatalf("Reserve %d: %v", i, err)
		}
	}
	acc := e.store()
	fetcher := accounts.Holder{Host: "fetch-a", PID: 4242, Token: "t"}
	if _, err := acc.Heartbeat(ctx, fetcher, 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	src := statusSources(serveCfg, rdb, acc, q, newTicketStore(rdb, serveCfg, acc, nil))
	srv := web.New(web.Options{Status: func(ctx context.Context) (any, error) { return src.Gather(ctx) }})
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	var fromHTTP status.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &fromHTTP); err != nil || len(fromHTTP.Accounts) != 1 {
		t.Fatalf("GET /status = %d %s (%v)", rec.Code, rec.Body, err)
	}
	hq := fromHTTP.Accounts[0].Quota
	if hq.Used != 3 || hq.Limit != 3 {
		t.Errorf("/status quota = %d/%d, want 3/3", hq.Used, hq.Limit)
	}

	var fromCLI status.Status
	if err := json.Unmarshal([]byte(e.mustRun("status", "--json")), &fromCLI); err != nil || len(fromCLI.Accounts) != 1 {
		t.Fatalf("status --json: %v", err)
	}
	if cq := fromCLI.Accounts[0].Quota; cq != hq {
		t.Errorf("status --json quota = %+v, /status = %+v", cq, hq)
	}
	if len(fromHTTP.Fetchers) != 1 || len(fromCLI.Fetchers) != 1 || fromCLI.Fetchers[0] != fromHTTP.Fetchers[0] || fromHTTP.Fetchers[0].Process != "fetch-a:4242" {
		t.Errorf("fetchers: status --json %+v, /status %+v; want fetch-a:4242 in both", fromCLI.Fetchers, fromHTTP.Fetchers)
	}
	want := fmt.Sprintf(" %d/%d", hq.Used, hq.Limit)
	wantOutput(t, "mailgate status", e.mustRun("status"), want, "fetchers:\n  fetch-a:4242 polls 1 of 1 accounts, last seen ")
	wantOutput(t, "mailgate accounts list", e.mustRun("accounts", "list"), want)
	if out := e.mustRun("status"); strings.Contains(out, "/500") {
		t.Errorf("mailgate status shows its own configured limit, not the relay's:\n%s", out)
	}
}
