package status

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/tickets"
)

const (
	support   = "support@acme.example"
	workspace = "help@acme.example"
)

type world struct {
	rdb *redis.Client
	acc *accounts.Store
	st  *tickets.Store
	q   *smtprelay.Queue
}

func newWorld(t *testing.T) *world {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	box, err := oauth.LoadOrCreateKey(filepath.Join(t.TempDir(), "key"))
	if err != nil {
		t.Fatal(err)
	}
	w := &world{rdb: rdb, acc: accounts.New(rdb, accounts.Options{Box: box})}
	w.st = tickets.NewStore(rdb, tickets.Options{SupportAddresses: w.acc.SupportAddresses})
	w.q = smtprelay.NewQueue(rdb, smtprelay.QueueOptions{})
	return w
}

func (w *world) sources() Sources {
	return Sources{Accounts: w.acc, Queue: w.q, Quota: smtprelay.NewQuota(w.q), Events: w.rdb, EventsKey: w.st.Key("events")}
}

func TestGather(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, a := range []accounts.Account{{Email: support}, {Email: workspace, Kind: accounts.KindWorkspace}} {
		if _, err := w.acc.Connect(ctx, a, "refresh-"+a.Email); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.acc.SetError(ctx, workspace, "reconnect it", fmt.Errorf("invalid_grant")); err != nil {
		t.Fatal(err)
	}
	m := &smtprelay.Message{From: support, To: []string{"alice@customer.example"}, Data: []byte("Subject: hi\r\n\r\nhi\r\n")}
	if err := w.q.Put(ctx, m); err != nil {
		t.Fatal(err)
	}
	quota := smtprelay.NewQuota(w.q)
	if _, err := quota.Reserve(ctx, support, m.ID, 1, 1, sendlimit.Limits{Messages: 500}, 0.9); err != nil {
		t.Fatal(err)
	}

	now := time.Now().Add(time.Minute)
	src := w.sources()
	src.Now = func() time.Time { return now }
	st, err := src.Gather(ctx)
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	if len(st.Accounts) != 2 {
		t.Fatalf("Gather accounts = %+v, want 2", st.Accounts)
	}
	got := map[string]Account{}
	for _, a := range st.Accounts {
		got[a.Email] = a
	}
	frees := got[support].Quota.FreesAt
	if a := got[support]; a.State != accounts.StateConnected || a.Quota != (Quota{Used: 1, Limit: 500, FreesAt: frees}) || !a.SendViaGmail {
		t.Errorf("account %s = %+v, want connected, quota 1/500", support, a)
	}
	// The one message sent frees its place 24 hours after it was sent.
	if d := time.Until(frees); d < 23*time.Hour || d > 24*time.Hour+time.Minute {
		t.Errorf("quota of %s frees at %v, want about 24 h from now", support, frees)
	}
	if a := got[workspace]; a.State != accounts.StateError || a.Warning != "reconnect it" || a.Quota != (Quota{Limit: 2000}) {
		t.Errorf("account %s = %+v, want error with its warning, quota 0/2000", workspace, a)
	}
	if st.Queue.Depth != 1 || st.Queue.Oldest.IsZero() || st.Queue.OldestAgeSeconds < 59 || st.Queue.OldestAgeSeconds > 120 {
		t.Errorf("queue = %+v, want 1 message about a minute old", st.Queue)
	}
	if st.Warnings == nil || len(st.Warnings) != 0 {
		t.Errorf("warnings = %#v, want an empty list", st.Warnings)
	}
}

// Warnings are found among many ticket events, newest first, each with a
// line a human can act on.
func TestRecentWarnings(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	pub := func(typ tickets.EventType, ticket int64, data any) {
		t.Helper()
		if err := w.st.Publish(ctx, typ, ticket, data); err != nil {
			t.Fatal(err)
		}
	}
	pub(tickets.EventSenderRateLimited, 0, map[string]any{"sender": "robot@x.example", "limit": 20})
	pub(tickets.EventQuotaWarning, 0, map[string]any{"account": support, "used": 450, "limit": 500, "message": support + " has sent 450 of its 500 daily Gmail messages"})
	pub(tickets.EventDeliveryFailed, 7, map[string]any{"queue_id": "q1", "from": support, "failed": map[string]string{"bob@x.example": "550 5.1.1 no such user"}})
	raw := []byte("From: Bad <bad@x.example>\r\nSubject: broken\r\n\r\nx\r\n")
	if err := w.st.Quarantine(ctx, raw, support, 42, "ingest failed 5 times: boom"); err != nil {
		t.Fatal(err)
	}
	// More ticket events than one page of the scan.
	pipe := w.rdb.Pipeline()
	for i := range scanPage + 50 {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: w.st.Key("events"), Values: []any{"type", string(tickets.EventTicketCreated), "ticket", fmt.Sprint(i + 1)}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	got, err := RecentWarnings(ctx, w.rdb, w.st.Key("events"), 10)
	if err != nil {
		t.Fatalf("RecentWarnings: %v", err)
	}
	if len(got) != 4 {
		t.Fatalf("RecentWarnings = %+v, want 4", got)
	}
	want := []struct {
		typ           tickets.EventType
		account, text string
	}{
		{tickets.EventMailQuarantined, support, `mail from bad@x.example "broken" quarantined after failing ingest (uid 42): ingest failed 5 times: boom`},
		{tickets.EventDeliveryFailed, support, "delivery failed for bob@x.example (queue id q1): 550 5.1.1 no such user"},
		{tickets.EventQuotaWarning, support, "has sent 450 of its 500"},
		{tickets.EventSenderRateLimited, "", "robot@x.example sent more than 20 mails"},
	}
	for i, wt := range want {
		g := got[i]
		if g.Type != wt.typ || g.Account != wt.account || !strings.Contains(g.Message, wt.text) || g.At.IsZero() || g.ID == "" {
			t.Errorf("warning %d = %+v, want type %s, account %s, message with %q", i, g, wt.typ, wt.account, wt.text)
		}
	}
	if got[1].Ticket != 7 {
		t.Errorf("delivery.failed ticket = %d, want 7", got[1].Ticket)
	}

	if got, err := RecentWarnings(ctx, w.rdb, w.st.Key("events"), 1); err != nil || len(got) != 1 || got[0].Type != tickets.EventMailQuarantined {
		t.Errorf("RecentWarnings(n=1) = %+v, %v; want the newest only", got, err)
	}
	if got, err := RecentWarnings(ctx, w.rdb, w.st.Key("nothing"), 5); err != nil || len(got) != 0 {
		t.Errorf("RecentWarnings of a missing stream = %+v, %v; want none", got, err)
	}
}

// TestGatherSaysDeliveryStopped: while the delivery queue is missing from
// Redis (it came back empty), the status says what stops delivery.
func TestGatherSaysDeliveryStopped(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	st, err := w.sources().Gather(ctx)
	if err != nil || !strings.Contains(st.Queue.Problem, "delivery queue is missing") {
		t.Fatalf("Gather without the queue = %+v, %v; want the problem said", st, err)
	}
	if err := w.q.EnsureGroup(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := w.sources().Gather(ctx); err != nil || st.Queue.Problem != "" {
		t.Errorf("Gather with the queue = %+v, %v; want no problem", st.Queue, err)
	}
}

// TestGatherDeferredAndBounced: the status lists deferred messages soonest
// first with their next try and last error, and counts today's bounces.
func TestGatherDeferredAndBounced(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	put := func() *smtprelay.Message {
		m := &smtprelay.Message{From: support, To: []string{"alice@customer.example"}, Data: []byte("Subject: hi\r\n\r\nhi\r\n")}
		if err := w.q.Put(ctx, m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	later, sooner := put(), put()
	for _, d := range []struct {
		m    *smtprelay.Message
		in   time.Duration
		last string
	}{{later, time.Hour, "451 4.7.0 later"}, {sooner, 10 * time.Minute, "421 4.4.2 timed out"}} {
		d.m.NextAttempt, d.m.LastError, d.m.Attempts = time.Now().Add(d.in), d.last, 1
		if err := w.q.Defer(ctx, d.m); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		m := put()
		m.State, m.LastError = smtprelay.StateBounced, "550 5.1.1 no such user"
		if err := w.q.Finish(ctx, m, 0); err != nil {
			t.Fatal(err)
		}
	}
	st, err := w.sources().Gather(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := st.Queue.Deferred
	if len(d) != 2 || d[0].ID != sooner.ID || d[0].LastError != "421 4.4.2 timed out" || d[0].Recipients != 1 || d[0].Attempts != 1 ||
		d[1].ID != later.ID || time.Until(d[0].NextAttempt) < 5*time.Minute || !d[0].NextAttempt.Before(d[1].NextAttempt) {
		t.Errorf("deferred = %+v, want %s (in 10 min, timed out) then %s", d, sooner.ID, later.ID)
	}
	if st.Queue.BouncedToday != 2 {
		t.Errorf("bounced today = %d, want 2", st.Queue.BouncedToday)
	}
	// Tomorrow, yesterday's bounces no longer count.
	src := w.sources()
	src.Now = func() time.Time { return time.Now().Add(24 * time.Hour) }
	if st, err := src.Gather(ctx); err != nil || st.Queue.BouncedToday != 0 {
		t.Errorf("bounced tomorrow = %+v, %v; want 0", st.Queue, err)
	}
}

// TestGatherShowsThrottle: Gather reports Gmail's throttle of an account
// while it lasts, in the words `status` and the console print.
func TestGatherShowsThrottle(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.acc.Connect(ctx, accounts.Account{Email: support}, "refresh"); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 9, 30, 0, 0, time.Local)
	if err := w.acc.SetThrottled(ctx, support, now.Add(20*time.Minute), "too many login attempts"); err != nil {
		t.Fatal(err)
	}
	src := w.sources()
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{now, "throttled by Google until 09:50 (too many login attempts)"},
		{now.Add(21 * time.Minute), ""}, // passed: no longer shown
	} {
		src.Now = func() time.Time { return tc.at }
		st, err := src.Gather(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Accounts[0].Throttled; got != tc.want {
			t.Errorf("at %s: Throttled = %q, want %q", tc.at.Format("15:04"), got, tc.want)
		}
	}
}

// TestGatherListsFetchers: the fetcher processes sharing the accounts are
// listed with how many each polls and when each was last heard from, in
// the JSON /status and `status --json` print and in the line `status` and
// the console print; one whose heartbeat ran out is not.
func TestGatherListsFetchers(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, e := range []string{support, workspace, "sales@acme.example"} {
		if _, err := w.acc.Connect(ctx, accounts.Account{Email: e}, "refresh"); err != nil {
			t.Fatal(err)
		}
	}
	a := accounts.Holder{Host: "fetch-a", PID: 4242, Token: "t1"}
	b := accounts.Holder{Host: "fetch-b", PID: 77, Token: "t2"}
	gone := accounts.Holder{Host: "fetch-c", PID: 9, Token: "t3"}
	for _, h := range []struct {
		me   accounts.Holder
		held int
		ttl  time.Duration
	}{{b, 1, time.Minute}, {gone, 0, 200 * time.Millisecond}, {a, 2, time.Minute}} {
		if _, err := w.acc.Heartbeat(ctx, h.me, h.held, h.ttl); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // fetch-c stopped beating
	st, err := w.sources().Gather(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f := st.Fetchers
	if len(f) != 2 || f[0].Process != "fetch-a:4242" || f[0].Accounts != 2 || f[1].Process != "fetch-b:77" || f[1].Accounts != 1 {
		t.Fatalf("fetchers = %+v, want fetch-a:4242 polling 2, fetch-b:77 polling 1", f)
	}
	for _, p := range f {
		if age := st.At.Sub(p.LastSeen); age < 0 || age > 5*time.Second {
			t.Errorf("%s last seen %s before the status, want about now", p.Process, age)
		}
	}
	line := f[0].Summary(f[0].LastSeen.Add(4*time.Second), len(st.Accounts))
	if line != "fetch-a:4242 polls 2 of 3 accounts, last seen 4s ago" {
		t.Errorf("summary = %q", line)
	}
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Fetchers []struct {
			Process  string    `json:"process"`
			Accounts int       `json:"accounts"`
			LastSeen time.Time `json:"last_seen"`
		} `json:"fetchers"`
	}
	if err := json.Unmarshal(js, &back); err != nil || len(back.Fetchers) != 2 || back.Fetchers[1].Process != "fetch-b:77" ||
		back.Fetchers[1].Accounts != 1 || !back.Fetchers[1].LastSeen.Equal(f[1].LastSeen) {
		t.Errorf("JSON fetchers = %+v (%v) from %s", back.Fetchers, err, js)
	}

	// No process running: an empty list, not null.
	if err := w.acc.Leave(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := w.acc.Leave(ctx, b); err != nil {
		t.Fatal(err)
	}
	st, err = w.sources().Gather(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if js, _ := json.Marshal(st); len(st.Fetchers) != 0 || !strings.Contains(string(js), `"fetchers":[]`) {
		t.Errorf("with no fetcher running: %s, want \"fetchers\":[]", js)
	}
}
