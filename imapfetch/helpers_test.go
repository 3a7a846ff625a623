package imapfetch

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/mailparse"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tickets"
	"github.com/mailgate/mailgate/tlsmode"
)

const (
	alice = "alice@example.com"
	bob   = "bob@example.com"
)

// env is one test's world: a real redis-server, the real account and
// ticket stores on it, a fake Google token endpoint and a fake Gmail.
type env struct {
	t     testing.TB
	redis *redistest.Server
	rdb   *redis.Client
	acc   *accounts.Store
	st    *tickets.Store
	oa    *fakeoauth.Server
	gm    *fakegmail.Server
	addr  string
	log   *slog.Logger
}

func newEnv(t testing.TB, gmOpts fakegmail.Options) *env {
	t.Helper()
	return newEnvRedis(t, gmOpts)
}

// newEnvRedis is newEnv with extra redis-server config lines, such as
// "appendonly yes" for a Redis that keeps its data over a restart.
func newEnvRedis(t testing.TB, gmOpts fakegmail.Options, redisConf ...string) *env {
	t.Helper()
	e := &env{t: t, log: testLogger(t)}
	e.redis = redistest.Start(t, redisConf...)
	e.rdb = e.redis.Client(t)
	box, err := oauth.NewBox([]byte(strings.Repeat("k", oauth.KeySize)))
	if err != nil {
		t.Fatal(err)
	}
	e.acc = accounts.New(e.rdb, accounts.Options{Box: box})
	e.st = tickets.NewStore(e.rdb, tickets.Options{SupportAddresses: e.acc.SupportAddresses, Logger: e.log})
	e.oa = fakeoauth.New()
	t.Cleanup(e.oa.Close)
	gmOpts.Validate = e.oa.Validate
	e.gm, err = fakegmail.New(gmOpts)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := e.gm.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.gm.Close() })
	e.addr = addr.String()
	return e
}

// options are fast settings for tests: plaintext to the loopback fake,
// short intervals.
func (e *env) options() Options {
	return Options{
		IMAPAddr:       e.addr,
		TLSMode:        tlsmode.Plain,
		PollInterval:   300 * time.Millisecond,
		IdleRestart:    5 * time.Second,
		LeaseTTL:       3 * time.Second,
		BackoffMax:     100 * time.Millisecond,
		IDLE:           true,
		MaxAttempts:    3,
		BatchSize:      7,
		CommandTimeout: 10 * time.Second,
		Tokens:         e.tokens(nil),
		Logger:         e.log,
		Holder:         "test-1",
	}
}

// tokens is a token registry on the env's account store and fake Google,
// built as the daemon builds its one; onRefresh may be nil.
func (e *env) tokens(onRefresh func(account string, err error)) *oauth.Registry {
	return oauth.NewRegistry(e.oa.Config(""), oauth.RegistryOptions{
		Load: e.acc.RefreshToken, Save: e.acc.SaveRefreshToken, MarkNeedsReconnect: e.acc.MarkNeedsReconnect,
		OnRefresh: onRefresh, Logger: e.log,
	})
}

// connect creates the mailbox in the fake (if new) and connects the account
// as `accounts add` would, returning the refresh token.
func (e *env) connect(email string, importRecent int) string {
	e.t.Helper()
	e.gm.AddUser(email)
	tok := e.oa.IssueRefreshToken(email)
	if _, err := e.acc.Connect(context.Background(), accounts.Account{Email: email, ImportRecent: importRecent}, tok); err != nil {
		e.t.Fatalf("Connect(%s): %v", email, err)
	}
	return tok
}

// nextSecond waits until the wall clock enters a new second. Mail delivered
// before it is "existing mail" for an account connected after it:
// INTERNALDATE has whole seconds, and mail from the second of the connect
// counts as new.
func nextSecond() {
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second).Sub(now) + 10*time.Millisecond)
}

// deliver puts a test mail in email's INBOX and returns its UID.
func (e *env) deliver(email string, n int, seen bool) imap.UID {
	e.t.Helper()
	uid, err := e.gm.Deliver(email, testMail(email, n), seen)
	if err != nil {
		e.t.Fatalf("Deliver: %v", err)
	}
	return uid
}

// testMail is mail number n to email, from its own sender so that no two
// test mails thread onto one ticket.
func testMail(to string, n int) []byte {
	return []byte(fmt.Sprintf("From: Customer %d <c%d@customer.test>\r\n"+
		"To: %s\r\n"+
		"Subject: Help number %d\r\n"+
		"Message-ID: <m%d.%s>\r\n"+
		"Date: Tue, 24 Nov 2026 10:00:00 +0100\r\n"+
		"MIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\n"+
		"\r\n"+
		"Mail number %d.\r\n", n, n, to, n, n, to, n))
}

// start runs f.Run until the test ends (or stop is called) and waits for
// it to return.
func (e *env) start(f *Fetcher) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run = %v, want nil after shutdown", err)
				}
			case <-time.After(15 * time.Second):
				e.t.Errorf("Run did not return within 15s of shutdown")
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

func (e *env) ticketCount() int64 {
	e.t.Helper()
	n, err := e.rdb.ZCard(context.Background(), e.st.Key("tickets")).Result()
	if err != nil {
		e.t.Fatalf("count tickets: %v", err)
	}
	return n
}

// tickets returns all tickets by subject.
func (e *env) tickets() map[string]*tickets.Ticket {
	e.t.Helper()
	list, err := e.st.List(context.Background(), tickets.ListOptions{Limit: 10000})
	if err != nil {
		e.t.Fatalf("List: %v", err)
	}
	out := make(map[string]*tickets.Ticket, len(list))
	for _, tk := range list {
		if _, dup := out[tk.Subject]; dup {
			e.t.Errorf("two tickets with subject %q", tk.Subject)
		}
		out[tk.Subject] = tk
	}
	return out
}

// wantOneCommentEach fails the test if a ticket holds more than one
// comment: each test mail is a ticket of its own, ingested once.
func (e *env) wantOneCommentEach() {
	e.t.Helper()
	for subject, tk := range e.tickets() {
		if tk.CommentCount != 1 {
			e.t.Errorf("ticket %q has %d comments, want 1 (no duplicate ingest)", subject, tk.CommentCount)
		}
	}
}

func (e *env) account(email string) *accounts.Account {
	e.t.Helper()
	a, err := e.acc.Get(context.Background(), email)
	if err != nil {
		e.t.Fatalf("Get(%s): %v", email, err)
	}
	return a
}

func (e *env) cursor(email string) accounts.Cursor {
	e.t.Helper()
	c, err := e.acc.Cursor(context.Background(), email)
	if err != nil {
		e.t.Fatalf("Cursor(%s): %v", email, err)
	}
	return c
}

func pollOnce(t testing.TB, f *Fetcher, email string) Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := f.PollOnce(ctx, email, nil)
	if err != nil {
		t.Fatalf("PollOnce(%s) = %+v, %v", email, rep, err)
	}
	return rep
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLogger sends logs to t.Log while the test runs, and drops those that
// a goroutine writes after it ended.
func testLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// flakyStore wraps the real ticket store: it can fail the first N mails
// or chosen Message-IDs, panic on a batch holding chosen Message-IDs, block batches, and it
// records whether each mail was already \Seen in the fake Gmail when its
// batch was handed to it (it must never be).
type flakyStore struct {
	*tickets.Store
	gm    *fakegmail.Server
	email string

	mu           sync.Mutex
	failFirst    int
	failErr      error           // what the first failFirst mails get; nil: a plain error
	poison       map[string]bool // Message-ID → the batch holding it panics
	failTimes    map[string]int  // Message-ID → how many more times it fails
	calls        int             // mails handed to IngestBatch
	batches      [][]string      // Message-IDs of each IngestBatch call
	seenAtIngest []string
	uids         map[string]imap.UID // Message-ID → UID, see track
	block        chan struct{}       // if set, IngestBatch waits for it to close
	entered      chan struct{}       // receives a value when an IngestBatch starts
}

// IngestBatch panics before storing anything when a mail of the batch is
// poison, as a store that builds one script call for the whole batch
// would; otherwise it fails the first failFirst mails and hands the rest
// to the real store.
func (s *flakyStore) IngestBatch(ctx context.Context, mails []tickets.BatchMail) []tickets.BatchResult {
	ids := make([]string, len(mails))
	for i, m := range mails {
		p := m.Parsed
		if p == nil {
			p = mailparse.Parse(m.Raw)
		}
		ids[i] = p.MessageID
	}
	s.mu.Lock()
	s.batches = append(s.batches, ids)
	block, entered := s.block, s.entered
	s.mu.Unlock()
	if entered != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
	}
	if block != nil {
		<-block
	}
	out := make([]tickets.BatchResult, len(mails))
	var pass []tickets.BatchMail
	var at []int
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, m := range mails {
		if s.gm != nil && !m.Source.SuppressTriggers && s.isSeen(ids[i]) {
			s.seenAtIngest = append(s.seenAtIngest, ids[i])
		}
		if s.poison[ids[i]] {
			panic("parser exploded on " + ids[i])
		}
		s.calls++
		if s.failTimes[ids[i]] > 0 {
			s.failTimes[ids[i]]--
			out[i].Err = fmt.Errorf("injected store failure of %s", ids[i])
			continue
		}
		if s.calls <= s.failFirst {
			out[i].Err = s.failErr
			if out[i].Err == nil {
				out[i].Err = fmt.Errorf("injected store failure")
			}
			continue
		}
		pass = append(pass, m)
		at = append(at, i)
	}
	for j, r := range s.Store.IngestBatch(ctx, pass) {
		out[at[j]] = r
	}
	return out
}

// track records the UID a test mail got, for the \Seen check.
func (s *flakyStore) track(email string, n int, uid imap.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uids == nil {
		s.uids = make(map[string]imap.UID)
	}
	s.uids[fmt.Sprintf("m%d.%s", n, email)] = uid
}

// isSeen is called with s.mu held.
func (s *flakyStore) isSeen(messageID string) bool {
	uid, ok := s.uids[strings.Trim(messageID, "<>")]
	return ok && s.gm.IsSeen(s.email, uid)
}
