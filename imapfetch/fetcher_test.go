package imapfetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/internal/testcert"
	"github.com/mailgate/mailgate/mailparse"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tlsmode"
)

// Unread mail becomes tickets, read mail does not, and mail is
// marked \Seen once its ticket exists.
func TestUnreadMailBecomesTickets(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	f := New(e.acc, e.st, e.options())
	if rep := pollOnce(t, f, alice); rep != (Report{}) {
		t.Fatalf("first PollOnce on an empty INBOX = %+v, want nothing", rep)
	}

	var unread, read []imap.UID
	for i := 1; i <= 6; i++ {
		uid := e.deliver(alice, i, i%3 == 0) // mails 3 and 6 were read in Gmail
		if i%3 == 0 {
			read = append(read, uid)
		} else {
			unread = append(unread, uid)
		}
	}
	rep := pollOnce(t, f, alice)
	if want := (Report{Fetched: 4, Created: 4}); rep != want {
		t.Fatalf("PollOnce = %+v, want %+v", rep, want)
	}
	got := e.tickets()
	for _, n := range []int{1, 2, 4, 5} {
		tk := got[fmt.Sprintf("Help number %d", n)]
		if tk == nil {
			t.Fatalf("no ticket for unread mail %d; tickets %v", n, keys(got))
		}
		if tk.SupportAddress != alice || tk.Source != "imap:"+alice || tk.SuppressTriggers {
			t.Errorf("ticket for mail %d: support %q source %q suppress %v; want %s, imap:%s, false",
				n, tk.SupportAddress, tk.Source, tk.SuppressTriggers, alice, alice)
		}
	}
	if len(got) != 4 {
		t.Errorf("%d tickets (%v), want 4: read mail must not become tickets", len(got), keys(got))
	}
	for _, uid := range unread {
		if !e.gm.IsSeen(alice, uid) {
			t.Errorf("UID %d unseen after its ticket was stored", uid)
		}
	}
	// The read mail 6 is above the last unread one: done all the same.
	if c := e.cursor(alice); c.LastUID != uint32(read[len(read)-1]) || c.UIDValidity != e.gm.UIDValidity(alice) {
		t.Errorf("cursor = %+v, want last UID %d, UIDVALIDITY %d", c, read[len(read)-1], e.gm.UIDValidity(alice))
	}
	a := e.account(alice)
	if a.Imported != 4 || a.LastPoll.IsZero() || a.State != accounts.StateConnected {
		t.Errorf("account = %+v, want imported 4, last poll set, connected", a)
	}
	if rep := pollOnce(t, f, alice); rep != (Report{}) {
		t.Errorf("PollOnce again = %+v, want nothing new", rep)
	}
}

// \Seen is set only after the store said the mail is stored: a mail whose
// ingest failed stays unseen, holds the cursor, and is the only mail
// fetched again.
func TestSeenOnlyAfterTicketStored(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	fs := &flakyStore{Store: e.st, gm: e.gm, email: alice, failFirst: 1}
	f := New(e.acc, fs, e.options())
	pollOnce(t, f, alice)

	var uids []imap.UID
	for i := 1; i <= 3; i++ {
		uid := e.deliver(alice, i, false)
		fs.track(alice, i, uid)
		uids = append(uids, uid)
	}
	rep := pollOnce(t, f, alice)
	if want := (Report{Fetched: 3, Created: 2, Errors: 1}); rep != want {
		t.Fatalf("PollOnce with the first ingest failing = %+v, want %+v", rep, want)
	}
	if e.gm.IsSeen(alice, uids[0]) {
		t.Errorf("UID %d is \\Seen although its ingest failed", uids[0])
	}
	if !e.gm.IsSeen(alice, uids[1]) || !e.gm.IsSeen(alice, uids[2]) {
		t.Errorf("UIDs %v not \\Seen after their tickets were stored", uids[1:])
	}
	if c := e.cursor(alice); c.LastUID != uint32(uids[0])-1 {
		t.Errorf("cursor LastUID = %d, want %d (just below the failed mail)", c.LastUID, uids[0]-1)
	}

	rep = pollOnce(t, f, alice)
	if want := (Report{Fetched: 1, Created: 1}); rep != want {
		t.Fatalf("next PollOnce = %+v, want %+v (only the failed mail again)", rep, want)
	}
	if !e.gm.IsSeen(alice, uids[0]) {
		t.Errorf("UID %d still unseen after the retry stored its ticket", uids[0])
	}
	if n := e.ticketCount(); n != 3 {
		t.Errorf("%d tickets, want 3", n)
	}
	if c := e.cursor(alice); c.LastUID != uint32(uids[2]) {
		t.Errorf("cursor LastUID = %d, want %d", c.LastUID, uids[2])
	}
	if len(fs.seenAtIngest) > 0 {
		t.Errorf("mails %v were \\Seen before they were ingested", fs.seenAtIngest)
	}
}

// Connecting with --import-recent=50 imports the 50 newest of 60
// mails, read or unread, with triggers suppressed and flags untouched;
// later mail is ordinary.
func TestInitialImportRecent(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.gm.AddUser(alice)
	seen := map[imap.UID]bool{}
	for i := 0; i < 60; i++ {
		uid := e.deliver(alice, i, i%2 == 0)
		seen[uid] = i%2 == 0
	}
	nextSecond()
	e.connect(alice, 50)
	// Arrived after the connect, before the first session: new mail, not
	// part of the import.
	e.deliver(alice, 100, false)
	f := New(e.acc, e.st, e.options())

	var calls [][2]int
	rep, err := f.PollOnce(context.Background(), alice, func(done, total int) {
		calls = append(calls, [2]int{done, total})
	})
	if err != nil {
		t.Fatalf("PollOnce: %v", err)
	}
	if want := (Report{Fetched: 51, InitialImport: 50, Created: 51}); rep != want {
		t.Fatalf("PollOnce = %+v, want %+v", rep, want)
	}
	if len(calls) != 51 || calls[0] != [2]int{1, 50} || calls[49] != [2]int{50, 50} || calls[50] != [2]int{51, 51} {
		t.Errorf("progress calls %v, want 1/50 … 50/50, then 51/51", calls)
	}
	got := e.tickets()
	if len(got) != 51 {
		t.Fatalf("%d tickets, want 51", len(got))
	}
	if tk := got["Help number 100"]; tk == nil || tk.SuppressTriggers || slices.Contains(tk.Tags, "imported") {
		t.Errorf("mail that arrived after the connect: ticket %+v, want an ordinary ticket", tk)
	}
	for i := 0; i < 60; i++ {
		tk := got[fmt.Sprintf("Help number %d", i)]
		if i < 10 {
			if tk != nil {
				t.Errorf("mail %d (older than the 50 newest) became ticket #%d", i, tk.ID)
			}
			continue
		}
		if tk == nil {
			t.Errorf("mail %d: no ticket", i)
			continue
		}
		if !tk.SuppressTriggers || !slices.Contains(tk.Tags, "imported") {
			t.Errorf("imported ticket #%d: suppress_triggers %v tags %v, want true and [imported]: the initial import must not trigger the helpdesk", tk.ID, tk.SuppressTriggers, tk.Tags)
		}
	}
	delete(got, "Help number 100")
	for uid, was := range seen {
		if now := e.gm.IsSeen(alice, uid); now != was {
			t.Errorf("UID %d: \\Seen %v after the import, was %v; the import must not change flags", uid, now, was)
		}
	}
	a := e.account(alice)
	if !a.ImportDone {
		t.Errorf("ImportDone false after the import")
	}

	if c := e.cursor(alice); c.LastUID != 61 {
		t.Errorf("cursor LastUID = %d, want 61", c.LastUID)
	}

	// The import runs once; new mail afterwards is ordinary.
	e.deliver(alice, 101, false)
	rep = pollOnce(t, f, alice)
	if want := (Report{Fetched: 1, Created: 1}); rep != want {
		t.Fatalf("PollOnce after the import = %+v, want %+v", rep, want)
	}
	tk := e.tickets()["Help number 101"]
	if tk == nil || tk.SuppressTriggers || slices.Contains(tk.Tags, "imported") {
		t.Errorf("ticket for new mail = %+v, want an ordinary ticket", tk)
	}
}

// With --import-recent=0 no existing mail, read or not, becomes a ticket.
func TestInitialImportNone(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.gm.AddUser(alice)
	var old []imap.UID
	for i := 0; i < 5; i++ {
		old = append(old, e.deliver(alice, i, false))
	}
	nextSecond()
	e.connect(alice, 0)
	e.deliver(alice, 10, false) // after the connect: new mail
	f := New(e.acc, e.st, e.options())
	if rep := pollOnce(t, f, alice); rep != (Report{Fetched: 1, Created: 1}) {
		t.Fatalf("PollOnce = %+v, want only the mail that arrived after the connect", rep)
	}
	if tk := e.tickets()["Help number 10"]; tk == nil || tk.SuppressTriggers {
		t.Fatalf("mail after the connect: ticket %+v, want an ordinary ticket", tk)
	}
	for _, uid := range old {
		if e.gm.IsSeen(alice, uid) {
			t.Errorf("old UID %d was marked \\Seen", uid)
		}
	}
	if !e.account(alice).ImportDone {
		t.Error("ImportDone false")
	}
	e.deliver(alice, 11, false)
	if rep := pollOnce(t, f, alice); rep != (Report{Fetched: 1, Created: 1}) {
		t.Fatalf("PollOnce after new mail = %+v, want one ticket", rep)
	}
	if n := e.ticketCount(); n != 2 {
		t.Errorf("%d tickets, want 2", n)
	}
}

// Two accounts at once, each its own support address.
func TestTwoAccounts(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	e.connect(bob, 0)
	e.start(New(e.acc, e.st, e.options()))
	waitFor(t, 10*time.Second, "both accounts polled", func() bool {
		return !e.account(alice).LastPoll.IsZero() && !e.account(bob).LastPoll.IsZero()
	})
	e.deliver(alice, 1, false)
	e.deliver(bob, 2, false)
	waitFor(t, 10*time.Second, "two tickets", func() bool { return e.ticketCount() == 2 })
	got := e.tickets()
	if tk := got["Help number 1"]; tk == nil || tk.SupportAddress != alice {
		t.Errorf("alice's mail: ticket %+v, want support address %s", tk, alice)
	}
	if tk := got["Help number 2"]; tk == nil || tk.SupportAddress != bob {
		t.Errorf("bob's mail: ticket %+v, want support address %s", tk, bob)
	}
	addrs, err := e.acc.SupportAddresses(context.Background())
	if err != nil || !slices.Equal(addrs, []string{alice, bob}) {
		t.Errorf("SupportAddresses = %v, %v; want both accounts", addrs, err)
	}
}

// A disconnected account is not fetched; after reconnecting,
// the mail that arrived meanwhile becomes a ticket and nothing is imported
// twice.
func TestDisconnectReconnect(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	e.start(New(e.acc, e.st, e.options()))
	waitFor(t, 10*time.Second, "first poll", func() bool { return !e.account(alice).LastPoll.IsZero() })
	e.deliver(alice, 1, false)
	waitFor(t, 10*time.Second, "ticket for mail 1", func() bool { return e.ticketCount() == 1 })

	if err := e.acc.Disconnect(context.Background(), alice); err != nil {
		t.Fatal(err)
	}
	logins := e.gm.Logins(alice)
	time.Sleep(500 * time.Millisecond) // the worker stops
	uid2 := e.deliver(alice, 2, false)
	time.Sleep(time.Second) // several poll intervals
	if n := e.ticketCount(); n != 1 {
		t.Fatalf("%d tickets while disconnected, want 1: a disconnected account is not fetched", n)
	}
	if e.gm.IsSeen(alice, uid2) {
		t.Fatalf("mail delivered while disconnected was marked \\Seen")
	}
	if got := e.gm.Logins(alice); got != logins {
		t.Fatalf("%d logins while disconnected, want none", got-logins)
	}

	reconnected, err := e.acc.Connect(context.Background(), accounts.Account{Email: alice}, e.oa.IssueRefreshToken(alice))
	if err != nil || !reconnected {
		t.Fatalf("Connect (reconnect) = %v, %v", reconnected, err)
	}
	waitFor(t, 10*time.Second, "ticket for mail 2 after reconnect", func() bool { return e.ticketCount() == 2 })
	e.deliver(alice, 3, false)
	waitFor(t, 10*time.Second, "ticket for mail 3", func() bool { return e.ticketCount() == 3 })
	e.wantOneCommentEach()
}

// IDLE: new mail becomes a ticket within seconds although the poll
// interval is an hour.
func TestIdleDeliversQuickly(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	idleDeliversQuickly(t, e, func(n int) { e.deliver(alice, n, false) })
}

// idleDeliversQuickly connects alice with an hour's poll interval, waits
// until the worker idles, then has deliver put mails 1 to 3 in her INBOX
// one by one, each of which must become a ticket within 5 seconds.
func idleDeliversQuickly(t *testing.T, e *env, deliver func(n int)) {
	t.Helper()
	e.connect(alice, 0)
	o := e.options()
	o.PollInterval = time.Hour
	e.start(New(e.acc, e.st, o))
	waitFor(t, 10*time.Second, "first poll", func() bool { return !e.account(alice).LastPoll.IsZero() })
	time.Sleep(100 * time.Millisecond) // into IDLE
	for i := 1; i <= 3; i++ {
		start := time.Now()
		deliver(i)
		waitFor(t, 5*time.Second, fmt.Sprintf("ticket %d via IDLE", i), func() bool { return e.ticketCount() == int64(i) })
		t.Logf("mail %d became a ticket %v after delivery", i, time.Since(start).Round(time.Millisecond))
	}
}

// Gmail ends IDLE after ~29 minutes with BYE: the worker reconnects and
// keeps delivering. Re-issuing IDLE before the cut-off avoids it.
func TestIdleCutoff(t *testing.T) {
	t.Run("server cuts off", func(t *testing.T) {
		e := newEnv(t, fakegmail.Options{IdleTimeout: 200 * time.Millisecond})
		e.connect(alice, 0)
		o := e.options()
		o.PollInterval = time.Hour
		o.IdleRestart = time.Hour
		e.start(New(e.acc, e.st, o))
		e.deliver(alice, 1, false)
		waitFor(t, 10*time.Second, "first ticket", func() bool { return e.ticketCount() == 1 })
		waitFor(t, 10*time.Second, "a reconnect after the cut-off", func() bool { return e.gm.Logins(alice) >= 3 })
		e.deliver(alice, 2, false)
		waitFor(t, 5*time.Second, "ticket after reconnecting", func() bool { return e.ticketCount() == 2 })
		if a := e.account(alice); a.State != accounts.StateConnected || a.Warning != "" {
			t.Errorf("account after IDLE cut-offs: %s %q, want connected without warning", a.State, a.Warning)
		}
	})
	t.Run("restart before cut-off", func(t *testing.T) {
		e := newEnv(t, fakegmail.Options{IdleTimeout: 400 * time.Millisecond})
		e.connect(alice, 0)
		o := e.options()
		o.PollInterval = time.Hour
		o.IdleRestart = 100 * time.Millisecond
		e.start(New(e.acc, e.st, o))
		waitFor(t, 10*time.Second, "first poll", func() bool { return !e.account(alice).LastPoll.IsZero() })
		time.Sleep(time.Second)
		e.deliver(alice, 1, false)
		waitFor(t, 5*time.Second, "ticket", func() bool { return e.ticketCount() == 1 })
		if n := e.gm.Logins(alice); n != 1 {
			t.Errorf("%d logins, want 1: IDLE re-issued every 100ms must beat a 400ms cut-off", n)
		}
	})
}

// A revoked grant puts the account in error with a warning and stops
// fetching; reconnecting clears it and fetching resumes.
func TestRevokedToken(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	e.start(New(e.acc, e.st, e.options()))
	waitFor(t, 10*time.Second, "first poll", func() bool { return !e.account(alice).LastPoll.IsZero() })

	e.oa.RevokeAll(alice) // the user removed mailgate in their Google account
	e.gm.Disconnect(alice)
	waitFor(t, 10*time.Second, "account in error", func() bool { return e.account(alice).State == accounts.StateError })
	a := e.account(alice)
	want := "Google revoked mailgate's access (invalid_grant): mail is no longer fetched and notifications no longer go out via Gmail (they take the account's fallback) until you run `mailgate accounts reconnect alice@example.com`"
	if a.Warning != want || !strings.Contains(a.LastError, "invalid_grant") {
		t.Errorf("account after revocation: warning %q, last error %q; want %q and an invalid_grant error", a.Warning, a.LastError, want)
	}
	logins := e.gm.Logins(alice)
	e.deliver(alice, 1, false)
	time.Sleep(time.Second)
	if n := e.ticketCount(); n != 0 || e.gm.Logins(alice) != logins {
		t.Fatalf("%d tickets, %d logins while revoked; want none", n, e.gm.Logins(alice)-logins)
	}

	if _, err := e.acc.Connect(context.Background(), accounts.Account{Email: alice}, e.oa.IssueRefreshToken(alice)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ticket after reconnect", func() bool { return e.ticketCount() == 1 })
	if a := e.account(alice); a.State != accounts.StateConnected || a.Warning != "" {
		t.Errorf("after reconnect: %s %q, want connected, no warning", a.State, a.Warning)
	}
}

// An access token the server no longer accepts is refreshed once and the
// login goes on.
func TestAccessTokenExpiry(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	e.start(New(e.acc, e.st, e.options()))
	e.deliver(alice, 1, false)
	waitFor(t, 10*time.Second, "first ticket", func() bool { return e.ticketCount() == 1 })
	reqs, logins := e.oa.TokenRequests(), e.gm.Logins(alice)

	e.oa.ExpireAccessTokens()
	e.gm.Disconnect(alice)
	waitFor(t, 10*time.Second, "login with a refreshed token", func() bool { return e.gm.Logins(alice) > logins })
	if e.oa.TokenRequests() <= reqs {
		t.Errorf("no token refresh after the access token expired")
	}
	e.deliver(alice, 2, false)
	waitFor(t, 10*time.Second, "second ticket", func() bool { return e.ticketCount() == 2 })
	if a := e.account(alice); a.State != accounts.StateConnected {
		t.Errorf("account state %s after refresh, want connected", a.State)
	}
}

// A mail that makes the parser or the store panic is retried, then
// quarantined after MaxAttempts; the mails around it are imported and it
// no longer holds the cursor.
func TestPoisonMailQuarantined(t *testing.T) {
	for _, where := range []string{"parser", "store"} {
		t.Run(where, func(t *testing.T) {
			e := newEnv(t, fakegmail.Options{})
			e.connect(alice, 0)
			fs := &flakyStore{Store: e.st}
			o := e.options()
			o.MaxAttempts = 3
			f := New(e.acc, fs, o)
			if where == "store" {
				fs.poison = map[string]bool{"m2." + alice: true}
			} else {
				f.parse = func(raw []byte) *mailparse.Parsed {
					if strings.Contains(string(raw), "<m2.") {
						panic("parser exploded")
					}
					return mailparse.Parse(raw)
				}
			}
			poisonMailQuarantined(t, e, f)
		})
	}
}

func poisonMailQuarantined(t *testing.T, e *env, f *Fetcher) {
	pollOnce(t, f, alice)
	var uids []imap.UID
	for i := 1; i <= 3; i++ {
		uids = append(uids, e.deliver(alice, i, false))
	}

	for attempt := 1; attempt <= 2; attempt++ {
		rep := pollOnce(t, f, alice)
		want := Report{Fetched: 1, Errors: 1}
		if attempt == 1 {
			want = Report{Fetched: 3, Created: 2, Errors: 1}
		}
		if rep != want {
			t.Fatalf("poll %d = %+v, want %+v", attempt, rep, want)
		}
		if c := e.cursor(alice); c.LastUID != uint32(uids[0]) {
			t.Fatalf("poll %d: cursor %d, want %d (held below the failing mail)", attempt, c.LastUID, uids[0])
		}
		if !e.gm.IsSeen(alice, uids[0]) || !e.gm.IsSeen(alice, uids[2]) {
			t.Fatalf("poll %d: the mails stored beside the poison one are not \\Seen", attempt)
		}
	}
	rep := pollOnce(t, f, alice)
	if want := (Report{Fetched: 1, Quarantined: 1}); rep != want {
		t.Fatalf("poll 3 = %+v, want %+v", rep, want)
	}
	if c := e.cursor(alice); c.LastUID != uint32(uids[2]) {
		t.Errorf("cursor %d after quarantine, want %d", c.LastUID, uids[2])
	}
	if e.gm.IsSeen(alice, uids[1]) {
		t.Errorf("quarantined mail was marked \\Seen; it must stay unread for a human")
	}
	q, err := e.st.QuarantineList(context.Background())
	if err != nil || len(q) != 1 {
		t.Fatalf("QuarantineList = %+v, %v; want one mail", q, err)
	}
	if q[0].Account != alice || q[0].UID != uint32(uids[1]) || !strings.Contains(q[0].Reason, "panic") {
		t.Errorf("quarantined %+v, want account %s uid %d with the panic as reason", q[0], alice, uids[1])
	}
	if a := e.account(alice); a.Quarantined != 1 {
		t.Errorf("account Quarantined = %d, want 1", a.Quarantined)
	}
	if rep := pollOnce(t, f, alice); rep != (Report{}) {
		t.Errorf("poll after quarantine = %+v, want nothing", rep)
	}
	if n := e.ticketCount(); n != 2 {
		t.Errorf("%d tickets, want 2", n)
	}
	e.wantOneCommentEach()
}

// Two processes on one Redis: only the lease holder logs in, each mail
// becomes one ticket, and the other takes over when the holder stops.
func TestLeaseTwoFetchers(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	o1, o2 := e.options(), e.options()
	o1.Holder, o2.Holder = "fetcher-1", "fetcher-2"
	o1.LeaseTTL, o2.LeaseTTL = 900*time.Millisecond, 900*time.Millisecond
	stop1 := e.start(New(e.acc, e.st, o1))
	waitFor(t, 10*time.Second, "first poll", func() bool { return !e.account(alice).LastPoll.IsZero() })
	e.start(New(e.acc, e.st, o2))

	for i := 1; i <= 5; i++ {
		e.deliver(alice, i, false)
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, 10*time.Second, "5 tickets", func() bool { return e.ticketCount() == 5 })
	time.Sleep(time.Second) // more than a lease lifetime: renewals work
	if n := e.gm.Logins(alice); n != 1 {
		t.Errorf("%d logins with two fetchers, want 1 (only the lease holder polls)", n)
	}

	stop1()
	waitFor(t, 10*time.Second, "the second fetcher takes over", func() bool { return e.gm.Logins(alice) == 2 })
	for i := 6; i <= 8; i++ {
		e.deliver(alice, i, false)
	}
	waitFor(t, 10*time.Second, "8 tickets", func() bool { return e.ticketCount() == 8 })
	e.wantOneCommentEach()
}

// Shutdown waits for the batch being ingested (here of one mail) and marks
// it \Seen; the batch fetched ahead of it is dropped, not stored.
func TestShutdownFinishesIngest(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	fs := &flakyStore{Store: e.st, block: make(chan struct{}), entered: make(chan struct{}, 1)}
	o := e.options()
	o.BatchSize = 1
	stop := e.start(New(e.acc, fs, o))
	waitFor(t, 10*time.Second, "first poll", func() bool { return !e.account(alice).LastPoll.IsZero() })
	uid := e.deliver(alice, 1, false)
	e.deliver(alice, 2, false)
	select {
	case <-fs.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no ingest started")
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Run returned while an ingest was in flight")
	case <-time.After(300 * time.Millisecond):
	}
	close(fs.block)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the ingest finished")
	}
	if n := e.ticketCount(); n != 1 {
		t.Errorf("%d tickets after shutdown, want 1 (the in-flight mail, not the next)", n)
	}
	if !e.gm.IsSeen(alice, uid) {
		t.Errorf("the mail ingested during shutdown was not marked \\Seen")
	}
	if c := e.cursor(alice); c.LastUID != uint32(uid) {
		t.Errorf("cursor %d after shutdown, want %d", c.LastUID, uid)
	}
}

// A new UIDVALIDITY resets the cursor; Message-ID dedupe keeps mail that is
// fetched again from becoming a second ticket.
func TestUIDValidityChange(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.gm.AddUser(alice)
	for i := 0; i < 3; i++ {
		e.deliver(alice, i, false) // unread: the import leaves them so
	}
	nextSecond()
	e.connect(alice, 50)
	f := New(e.acc, e.st, e.options())
	if rep := pollOnce(t, f, alice); rep.Created != 3 {
		t.Fatalf("import = %+v, want 3 tickets", rep)
	}
	newV, err := e.gm.ResetUIDValidity(alice)
	if err != nil {
		t.Fatal(err)
	}
	rep := pollOnce(t, f, alice)
	if want := (Report{Fetched: 3, Duplicates: 3}); rep != want {
		t.Fatalf("PollOnce after UIDVALIDITY change = %+v, want %+v", rep, want)
	}
	if c := e.cursor(alice); c.UIDValidity != newV || c.LastUID != 3 {
		t.Errorf("cursor %+v, want UIDVALIDITY %d last UID 3", c, newV)
	}
	if n := e.ticketCount(); n != 3 {
		t.Errorf("%d tickets, want 3", n)
	}
}

func TestImplicitTLSAndID(t *testing.T) {
	ca, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, fakegmail.Options{TLS: ca.ServerTLS("imap.gmail.com")})
	e.connect(alice, 0)
	o := e.options()
	o.TLSMode = tlsmode.Implicit
	o.TLSConfig = ca.ClientTLS("imap.gmail.com")
	o.ClientID = &imap.IDData{Name: "mailgate", Version: "test"}
	f := New(e.acc, e.st, o)
	pollOnce(t, f, alice)
	e.deliver(alice, 1, false)
	if rep := pollOnce(t, f, alice); rep.Created != 1 {
		t.Fatalf("PollOnce over TLS = %+v, want one ticket", rep)
	}
	if id := e.gm.ClientID(alice); id == nil || id.Name != "mailgate" || id.Version != "test" {
		t.Errorf("server saw ID %+v, want mailgate/test", id)
	}

	// Without the CA the certificate is refused.
	o.TLSConfig = &tls.Config{ServerName: "imap.gmail.com"}
	if _, err := New(e.acc, e.st, o).PollOnce(context.Background(), alice, nil); err == nil {
		t.Error("PollOnce trusted a self-signed certificate without its CA")
	}
}

func TestPlaintextOnlyToLoopback(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	o := e.options()
	o.IMAPAddr = "192.0.2.1:143"
	_, err := New(e.acc, e.st, o).PollOnce(context.Background(), alice, nil)
	if err == nil || !strings.Contains(err.Error(), "refusing plaintext") {
		t.Errorf("PollOnce plaintext to a public address = %v, want refusal", err)
	}
}

// An unreachable store says nothing about the mail: the poll stops with an
// error, no attempt is counted, and the mail is fetched again later.
func TestStoreOutageNotCountedAgainstMail(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	refused := fmt.Errorf("support addresses: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
	fs := &flakyStore{Store: e.st, failFirst: 2, failErr: refused}
	o := e.options()
	o.MaxAttempts = 1 // a counted failure would quarantine at once
	f := New(e.acc, fs, o)
	pollOnce(t, f, alice)
	uid := e.deliver(alice, 1, false)
	for i := 0; i < 2; i++ {
		if _, err := f.PollOnce(context.Background(), alice, nil); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("PollOnce with the store down = %v, want the connection error", err)
		}
	}
	if keys, _ := e.rdb.Keys(context.Background(), "*attempts*").Result(); len(keys) > 0 {
		t.Errorf("attempts counted during a store outage: %v", keys)
	}
	if e.gm.IsSeen(alice, uid) {
		t.Error("mail marked \\Seen although the store was down")
	}
	if rep := pollOnce(t, f, alice); rep != (Report{Fetched: 1, Created: 1}) {
		t.Errorf("PollOnce after the outage = %+v, want the mail as a ticket", rep)
	}
}

// A refresh token sealed with another key (secrets.key_file replaced) needs
// a reconnect too: the account goes to error instead of retrying forever.
func TestUndecryptableToken(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.gm.AddUser(alice)
	otherKey, err := oauth.NewBox([]byte(strings.Repeat("x", oauth.KeySize)))
	if err != nil {
		t.Fatal(err)
	}
	other := accounts.New(e.rdb, accounts.Options{Box: otherKey})
	if _, err := other.Connect(context.Background(), accounts.Account{Email: alice}, e.oa.IssueRefreshToken(alice)); err != nil {
		t.Fatal(err)
	}
	e.start(New(e.acc, e.st, e.options()))
	waitFor(t, 10*time.Second, "account in error", func() bool { return e.account(alice).State == accounts.StateError })
	if a := e.account(alice); !strings.Contains(a.Warning, "cannot decrypt") || !strings.Contains(a.Warning, "accounts reconnect alice@example.com") {
		t.Errorf("warning %q, want the decrypt problem and the reconnect command", a.Warning)
	}
	e.connect(alice, 0) // reconnect with this process's key
	e.deliver(alice, 1, false)
	waitFor(t, 10*time.Second, "ticket after reconnect", func() bool { return e.ticketCount() == 1 })
}

func TestPollOnceErrors(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	f := New(e.acc, e.st, e.options())
	if err := e.acc.Disconnect(context.Background(), alice); err != nil {
		t.Fatal(err)
	}
	if _, err := f.PollOnce(context.Background(), alice, nil); !errors.Is(err, ErrNotConnected) {
		t.Errorf("PollOnce(disconnected) = %v, want ErrNotConnected", err)
	}

	e.connect(bob, 0)
	o := e.options()
	o.LeaseTTL = 300 * time.Millisecond
	if l, err := e.acc.AcquireLease(context.Background(), bob, accounts.NewHolder("daemon"), time.Minute); !l.Mine || err != nil {
		t.Fatalf("AcquireLease = %+v, %v", l, err)
	}
	if _, err := New(e.acc, e.st, o).PollOnce(context.Background(), bob, nil); !errors.Is(err, ErrLeaseHeld) {
		t.Errorf("PollOnce while another process holds the lease = %v, want ErrLeaseHeld", err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
