package imapfetch

// The fetcher against a real Dovecot (internal/dovecottest) instead of the
// in-process fake Gmail: the same Redis, stores and fake Google (newEnv),
// with Dovecot checking the XOAUTH2 tokens against that fake Google's
// tokeninfo endpoint. Opt-in: MG_INTEGRATION=1 (scripts/test sets it).

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/dovecottest"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/mailparse"
	"github.com/mailgate/mailgate/tickets"
)

// newDovecotEnv is newEnv with the fetcher pointed at a fresh Dovecot that
// has a mailbox for each of users. newEnv's fake Gmail stays idle.
func newDovecotEnv(t testing.TB, users ...string) (*env, *dovecottest.Server) {
	t.Helper()
	dovecottest.SkipUnlessEnabled(t) // before starting Redis for nothing
	e := newEnv(t, fakegmail.Options{})
	dv := dovecottest.Start(t, dovecottest.Options{Users: users, TokeninfoURL: e.oa.TokeninfoURL()})
	e.addr = dv.Addr()
	return e, dv
}

// dvDeliver puts test mail n in email's INBOX on Dovecot.
func dvDeliver(t testing.TB, dv *dovecottest.Server, email string, n int, seen bool) imap.UID {
	t.Helper()
	uid, err := dv.Deliver(email, testMail(email, n), seen)
	if err != nil {
		t.Fatalf("Deliver(%s, mail %d): %v", email, n, err)
	}
	return uid
}

func dvIsSeen(t testing.TB, dv *dovecottest.Server, email string, n int) bool {
	t.Helper()
	seen, err := dv.IsSeen(email, fmt.Sprintf("m%d.%s", n, email))
	if err != nil {
		t.Fatalf("IsSeen(%s, mail %d): %v", email, n, err)
	}
	return seen
}

// seenCheckStore asks Dovecot, when a batch is handed to it, whether any
// mail of the batch is already \Seen: on a real server BODY.PEEK[] must
// leave it unseen until the ticket exists, and the \Seen of the batch
// before must not reach it. The first failFirst mails fail.
type seenCheckStore struct {
	*tickets.Store
	t         testing.TB
	dv        *dovecottest.Server
	email     string
	failFirst int

	mu           sync.Mutex
	calls        int // mails handed to IngestBatch
	batches      int
	seenAtIngest []string
}

func (s *seenCheckStore) IngestBatch(ctx context.Context, mails []tickets.BatchMail) []tickets.BatchResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches++
	out := make([]tickets.BatchResult, len(mails))
	var pass []tickets.BatchMail
	var at []int
	for i, m := range mails {
		id := mailparse.Parse(m.Raw).MessageID
		if seen, err := s.dv.IsSeen(s.email, id); err != nil || seen {
			s.seenAtIngest = append(s.seenAtIngest, fmt.Sprintf("%s (seen %v, err %v)", id, seen, err))
		}
		s.calls++
		if s.calls <= s.failFirst {
			out[i].Err = fmt.Errorf("injected store failure")
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

// Unread mail becomes tickets, read mail does not, and \Seen is set only
// after the ticket is stored, on Dovecot.
func TestDovecotUnreadMailBecomesTickets(t *testing.T) {
	e, dv := newDovecotEnv(t, alice)
	e.connect(alice, 0)
	st := &seenCheckStore{Store: e.st, t: t, dv: dv, email: alice, failFirst: 1}
	f := New(e.acc, st, e.options())
	if rep := pollOnce(t, f, alice); rep != (Report{}) {
		t.Fatalf("first PollOnce on an empty INBOX = %+v, want nothing", rep)
	}

	var last imap.UID
	for i := 1; i <= 6; i++ {
		last = dvDeliver(t, dv, alice, i, i%3 == 0) // mails 3 and 6 were read
	}
	rep := pollOnce(t, f, alice)
	if want := (Report{Fetched: 4, Created: 3, Errors: 1}); rep != want {
		t.Fatalf("PollOnce with the first ingest failing = %+v, want %+v", rep, want)
	}
	if dvIsSeen(t, dv, alice, 1) {
		t.Errorf("mail 1 is \\Seen on Dovecot although its ingest failed")
	}
	for _, n := range []int{2, 4, 5} {
		if !dvIsSeen(t, dv, alice, n) {
			t.Errorf("mail %d unseen on Dovecot after its ticket was stored", n)
		}
	}
	rep = pollOnce(t, f, alice)
	if want := (Report{Fetched: 1, Created: 1}); rep != want {
		t.Fatalf("next PollOnce = %+v, want %+v (only the failed mail again)", rep, want)
	}
	got := e.tickets()
	for _, n := range []int{1, 2, 4, 5} {
		if got[fmt.Sprintf("Help number %d", n)] == nil {
			t.Errorf("no ticket for unread mail %d; tickets %v", n, keys(got))
		}
		if !dvIsSeen(t, dv, alice, n) {
			t.Errorf("mail %d unseen on Dovecot at the end", n)
		}
	}
	if len(got) != 4 {
		t.Errorf("%d tickets (%v), want 4: read mail must not become tickets", len(got), keys(got))
	}
	if n, err := dv.Unseen(alice); err != nil || n != 0 {
		t.Errorf("Unseen = %d, %v; want 0", n, err)
	}
	if c := e.cursor(alice); c.LastUID != uint32(last) || c.UIDValidity == 0 {
		t.Errorf("cursor = %+v, want last UID %d and Dovecot's UIDVALIDITY", c, last)
	}
	if len(st.seenAtIngest) > 0 {
		t.Errorf("mails already \\Seen on Dovecot when ingested: %v", st.seenAtIngest)
	}
	if rep := pollOnce(t, f, alice); rep != (Report{}) {
		t.Errorf("PollOnce again = %+v, want nothing new", rep)
	}
}

// Several batches in flight on Dovecot (the next UID FETCH is sent while a
// batch is stored, its \Seen while the next is stored): no mail of a batch
// is \Seen when the batch reaches the store, only stored mail becomes
// \Seen, and the failed ones are fetched again, once.
func TestDovecotBatchesSeenAfterStore(t *testing.T) {
	e, dv := newDovecotEnv(t, alice)
	e.connect(alice, 0)
	st := &seenCheckStore{Store: e.st, t: t, dv: dv, email: alice, failFirst: 4}
	o := e.options()
	o.BatchSize = 3
	f := New(e.acc, st, o)
	pollOnce(t, f, alice)
	for i := 1; i <= 10; i++ {
		dvDeliver(t, dv, alice, i, false)
	}
	rep := pollOnce(t, f, alice)
	if want := (Report{Fetched: 10, Created: 6, Errors: 4}); rep != want {
		t.Fatalf("PollOnce with the first 4 mails failing = %+v, want %+v", rep, want)
	}
	if st.batches != 4 {
		t.Errorf("%d store calls for 10 mails in batches of 3, want 4", st.batches)
	}
	for i := 1; i <= 10; i++ {
		if seen := dvIsSeen(t, dv, alice, i); seen != (i > 4) {
			t.Errorf("mail %d: \\Seen %v on Dovecot, want %v", i, seen, i > 4)
		}
	}
	if rep := pollOnce(t, f, alice); rep != (Report{Fetched: 4, Created: 4}) {
		t.Errorf("next PollOnce = %+v, want the 4 failed mails again", rep)
	}
	if n, err := dv.Unseen(alice); err != nil || n != 0 {
		t.Errorf("Unseen = %d, %v; want 0", n, err)
	}
	if n := e.ticketCount(); n != 10 {
		t.Errorf("%d tickets, want 10", n)
	}
	e.wantOneCommentEach()
	if len(st.seenAtIngest) > 0 {
		t.Errorf("mails already \\Seen on Dovecot when their batch reached the store: %v", st.seenAtIngest)
	}
}

// The initial import on Dovecot: it takes the newest existing mails by
// INTERNALDATE and leaves their flags alone.
func TestDovecotInitialImportRecent(t *testing.T) {
	e, dv := newDovecotEnv(t, alice)
	for i := 0; i < 12; i++ {
		dvDeliver(t, dv, alice, i, i%2 == 0)
	}
	nextSecond()
	e.connect(alice, 10)
	dvDeliver(t, dv, alice, 100, false) // after the connect: new mail
	f := New(e.acc, e.st, e.options())
	rep := pollOnce(t, f, alice)
	if want := (Report{Fetched: 11, InitialImport: 10, Created: 11}); rep != want {
		t.Fatalf("PollOnce = %+v, want %+v", rep, want)
	}
	got := e.tickets()
	for i := 0; i < 12; i++ {
		tk := got[fmt.Sprintf("Help number %d", i)]
		if (tk != nil) != (i >= 2) {
			t.Errorf("mail %d: ticket %v, want one only for the 10 newest", i, tk != nil)
		}
		if tk != nil && !tk.SuppressTriggers {
			t.Errorf("imported mail %d: suppress_triggers false", i)
		}
		if seen := dvIsSeen(t, dv, alice, i); seen != (i%2 == 0) {
			t.Errorf("mail %d: \\Seen %v after the import, want %v (flags untouched)", i, seen, i%2 == 0)
		}
	}
	if tk := got["Help number 100"]; tk == nil || tk.SuppressTriggers || !dvIsSeen(t, dv, alice, 100) {
		t.Errorf("mail after the connect: ticket %+v, want an ordinary ticket and \\Seen", tk)
	}
}

// IDLE on Dovecot: new mail becomes a ticket within seconds although the
// poll interval is an hour. Dovecot batches mailbox changes for half a
// second before it tells an idling client.
func TestDovecotIdleDeliversQuickly(t *testing.T) {
	e, dv := newDovecotEnv(t, alice)
	idleDeliversQuickly(t, e, func(n int) { dvDeliver(t, dv, alice, n, false) })
	for i := 1; i <= 3; i++ {
		if !dvIsSeen(t, dv, alice, i) {
			t.Errorf("mail %d unseen on Dovecot after its ticket was stored", i)
		}
	}
}

// Disconnect and reconnect on Dovecot: mail that arrives while the account is
// disconnected becomes a ticket after reconnecting, once.
func TestDovecotDisconnectReconnect(t *testing.T) {
	e, dv := newDovecotEnv(t, alice)
	e.connect(alice, 0)
	e.start(New(e.acc, e.st, e.options()))
	waitFor(t, 10*time.Second, "first poll", func() bool { return !e.account(alice).LastPoll.IsZero() })
	dvDeliver(t, dv, alice, 1, false)
	waitFor(t, 10*time.Second, "ticket for mail 1", func() bool { return e.ticketCount() == 1 })

	if err := e.acc.Disconnect(context.Background(), alice); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the worker stops
	dvDeliver(t, dv, alice, 2, false)
	time.Sleep(time.Second)
	if n := e.ticketCount(); n != 1 {
		t.Fatalf("%d tickets while disconnected, want 1: a disconnected account is not fetched", n)
	}
	if dvIsSeen(t, dv, alice, 2) {
		t.Fatal("mail delivered while disconnected was marked \\Seen")
	}
	if _, err := e.acc.Connect(context.Background(), accounts.Account{Email: alice}, e.oa.IssueRefreshToken(alice)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ticket for mail 2 after reconnect", func() bool { return e.ticketCount() == 2 })
	e.wantOneCommentEach()
}

// A token Dovecot no longer accepts (expired at Google before mailgate
// thought so) must be refreshed and the login retried, as with Gmail.
func TestDovecotAccessTokenExpiry(t *testing.T) {
	e, dv := newDovecotEnv(t, alice)
	e.connect(alice, 0)
	e.start(New(e.acc, e.st, e.options()))
	dvDeliver(t, dv, alice, 1, false)
	waitFor(t, 10*time.Second, "first ticket", func() bool { return e.ticketCount() == 1 })
	reqs := e.oa.TokenRequests()

	e.oa.ExpireAccessTokens()
	if err := dv.Kick(alice); err != nil {
		t.Fatal(err)
	}
	dvDeliver(t, dv, alice, 2, false)
	waitFor(t, 15*time.Second, "second ticket after a refreshed login", func() bool { return e.ticketCount() == 2 })
	if e.oa.TokenRequests() <= reqs {
		t.Errorf("no token refresh after the access token expired")
	}
	if a := e.account(alice); a.State != accounts.StateConnected {
		t.Errorf("account state %s after refresh, want connected", a.State)
	}
}

// A revoked grant on Dovecot puts the account in error.
func TestDovecotRevokedToken(t *testing.T) {
	e, dv := newDovecotEnv(t, alice)
	e.connect(alice, 0)
	e.start(New(e.acc, e.st, e.options()))
	waitFor(t, 10*time.Second, "first poll", func() bool { return !e.account(alice).LastPoll.IsZero() })

	e.oa.RevokeAll(alice)
	if err := dv.Kick(alice); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "account in error", func() bool { return e.account(alice).State == accounts.StateError })
	if _, err := e.acc.Connect(context.Background(), accounts.Account{Email: alice}, e.oa.IssueRefreshToken(alice)); err != nil {
		t.Fatal(err)
	}
	dvDeliver(t, dv, alice, 1, false)
	waitFor(t, 10*time.Second, "ticket after reconnect", func() bool { return e.ticketCount() == 1 })
}

// BenchmarkImportDovecot is BenchmarkImport against Dovecot: one PollOnce
// that turns 10,000 unread 10 KB mails into tickets. The mails are
// appended over one IMAP connection before the timer starts.
//
//	MG_INTEGRATION=1 go test -run '^$' -bench ImportDovecot -benchtime 1x ./imapfetch
func BenchmarkImportDovecot(b *testing.B) {
	if testing.Short() {
		b.Skip("fills a mailbox with 10,000 mails; skipped with -short")
	}
	for _, batch := range []int{20, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			e, dv := newDovecotEnv(b)
			e.log = slog.New(slog.DiscardHandler)
			o := e.options()
			o.Logger = e.log
			o.BatchSize = batch
			o.CommandTimeout = time.Minute
			f := New(e.acc, e.st, o)
			var total time.Duration
			var cpu cpuMeter
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				email := fmt.Sprintf("bench%d-%d@example.com", batch, i)
				if err := dv.AddUser(email); err != nil {
					b.Fatal(err)
				}
				e.connect(email, 0)
				pollOnce(b, f, email) // the first session: cursor set, import done
				raws := make([][]byte, benchMails)
				for n := range raws {
					raws[n] = benchMail(email, n)
				}
				began := time.Now()
				if _, err := dv.DeliverMany(email, raws, false); err != nil {
					b.Fatal(err)
				}
				b.Logf("appended %d mails to Dovecot in %v", benchMails, time.Since(began).Round(time.Millisecond))
				cpu.start(b, e)
				total += timedImport(b, f, email)
				cpu.stop(b, e)
			}
			b.ReportMetric(float64(benchMails*b.N)/total.Seconds(), "tickets/s")
			cpu.report(b, benchMails*b.N)
		})
	}
}

// nullStore answers every mail as a new ticket without storing it: with it
// BenchmarkFetchDovecot measures the fetch side alone (search, FETCH,
// parse, \Seen, cursor), the ceiling that the store's cost comes on top of.
type nullStore struct {
	*tickets.Store
	n int64
}

func (s *nullStore) IngestBatch(ctx context.Context, mails []tickets.BatchMail) []tickets.BatchResult {
	out := make([]tickets.BatchResult, len(mails))
	for i := range out {
		s.n++
		out[i].Result = tickets.Result{Ticket: s.n, Comment: 1, Created: true}
	}
	return out
}

// BenchmarkFetchDovecot is BenchmarkImportDovecot with a store that
// stores nothing: the CPU per mail of the fetch side, and its rate.
//
//	MG_INTEGRATION=1 go test -run '^$' -bench FetchDovecot -benchtime 1x ./imapfetch
func BenchmarkFetchDovecot(b *testing.B) {
	if testing.Short() {
		b.Skip("fills a mailbox with 10,000 mails; skipped with -short")
	}
	for _, batch := range []int{20, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			e, dv := newDovecotEnv(b)
			e.log = slog.New(slog.DiscardHandler)
			o := e.options()
			o.Logger = e.log
			o.BatchSize = batch
			o.CommandTimeout = time.Minute
			f := New(e.acc, &nullStore{Store: e.st}, o)
			var total time.Duration
			var cpu cpuMeter
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				email := fmt.Sprintf("fetch%d-%d@example.com", batch, i)
				if err := dv.AddUser(email); err != nil {
					b.Fatal(err)
				}
				e.connect(email, 0)
				pollOnce(b, f, email)
				raws := make([][]byte, benchMails)
				for n := range raws {
					raws[n] = benchMail(email, n)
				}
				if _, err := dv.DeliverMany(email, raws, false); err != nil {
					b.Fatal(err)
				}
				cpu.start(b, e)
				total += timedImport(b, f, email)
				cpu.stop(b, e)
			}
			b.ReportMetric(float64(benchMails*b.N)/total.Seconds(), "tickets/s")
			cpu.report(b, benchMails*b.N)
		})
	}
}

// Dovecot with a Sent folder named as a German client names it, marked
// \Sent by Dovecot's special_use setting (RFC 6154): the fetcher finds it
// by the attribute, and an agent's answer filed there becomes a comment.
// Dovecot offers no X-GM-EXT-1 either, so this is also the Sent folder
// without Gmail's extensions.
func TestDovecotSentFolderByAttribute(t *testing.T) {
	dovecottest.SkipUnlessEnabled(t)
	e := newEnv(t, fakegmail.Options{})
	dv := dovecottest.Start(t, dovecottest.Options{Users: []string{alice}, TokeninfoURL: e.oa.TokeninfoURL(),
		Extra: []string{
			"namespace inbox {",
			"  inbox = yes",
			"  mailbox Gesendet {",
			"    special_use = \\Sent",
			"    auto = create",
			"  }",
			"  mailbox Sent {", // a folder named Sent that is not the Sent folder
			"    auto = create",
			"  }",
			"}",
		}})
	e.addr = dv.Addr()
	tok := e.oa.IssueRefreshToken(alice)
	if _, err := e.acc.Connect(context.Background(), accounts.Account{Email: alice}, tok); err != nil {
		t.Fatal(err)
	}
	o := e.options()
	o.SentFolder = true
	f := New(e.acc, e.st, o)
	dvDeliver(t, dv, alice, 1, false)
	if rep := pollOnce(t, f, alice); rep.Created != 1 {
		t.Fatalf("first poll = %+v, want one ticket", rep)
	}
	if c := e.sentCursor(alice); c.UIDValidity == 0 {
		t.Fatalf("sent cursor = %+v, want the Gesendet folder's", c)
	}
	// The decoy first: were the folder found by name, this would be read.
	if _, err := dv.Append(alice, "Sent", agentReply(alice, 1, "decoy@example.com"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := dv.Append(alice, "Gesendet", agentReply(alice, 1, "answer@example.com"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := dv.Append(alice, "Gesendet", []byte("From: "+alice+"\r\nTo: friend@elsewhere.test\r\n"+
		"Subject: Lunch?\r\nMessage-ID: <lunch@example.com>\r\n\r\nNoon?\r\n"), true); err != nil {
		t.Fatal(err)
	}
	rep := pollOnce(t, f, alice)
	if rep.Comments != 1 || rep.Skipped != 1 || rep.Created != 0 || rep.Errors != 0 {
		t.Fatalf("poll = %+v, want the agent's answer as a comment and the private mail skipped", rep)
	}
	full, err := e.st.Get(context.Background(), e.tickets()["Help number 1"].ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Comments) != 2 || full.Comments[1].MessageID != "answer@example.com" || full.Comments[1].Role != tickets.RoleAgent {
		t.Fatalf("comments = %+v, want the agent's answer from Gesendet", full.Comments)
	}
	if c := e.sentCursor(alice); c.LastUID != 2 {
		t.Errorf("sent cursor = %+v, want last_uid 2", c)
	}
	// INBOX still works after the Sent folder was read.
	dvDeliver(t, dv, alice, 2, false)
	if rep := pollOnce(t, f, alice); rep.Created != 1 || rep.Comments != 0 {
		t.Errorf("poll = %+v, want the new INBOX mail only", rep)
	}
}
