package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/internal/proctest"
	"github.com/mailgate/mailgate/smtprelay"
)

// TestFetchOnceImportsWithProgress is the admin's path from a connected
// account to tickets: add it with --import-recent 3, fetch once (the
// initial import shows its progress), then a new unread mail arrives and
// the next fetch turns just that one into a ticket.
func TestFetchOnceImportsWithProgress(t *testing.T) {
	e := newAccountsEnv(t)
	gm, err := fakegmail.New(fakegmail.Options{Validate: e.google.Validate})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := gm.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gm.Close() })
	e.global = append(e.global, "--set", "google.imap_addr="+addr.String(), "--set", "google.imap_tls=plain")

	const acct = "support@acme.test"
	gm.AddUser(acct)
	for i := range 5 {
		gm.Deliver(acct, []byte(fmt.Sprintf("From: c%d@customer.test\r\nTo: %s\r\nSubject: old %d\r\nMessage-ID: <old%d@customer.test>\r\n\r\nold mail\r\n", i, acct, i, i)), i%2 == 0)
	}
	// "Existing mail" is what arrived before the connection, by IMAP
	// INTERNALDATE, which has whole seconds: connect in the next second.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	e.addAccount(acct, 3)

	out := e.mustRun("fetch", "--once")
	if !strings.Contains(out, "3/3 mails") || !strings.Contains(out, "3 new tickets") {
		t.Fatalf("first fetch:\n%s\nwant the import of the 3 most recent mails with progress", out)
	}
	if got := e.list()[0].Imported; got != 3 {
		t.Errorf("after the initial import the account counts %d imported mails, want 3", got)
	}
	gm.Deliver(acct, []byte("From: new@customer.test\r\nTo: "+acct+"\r\nSubject: new\r\nMessage-ID: <new@customer.test>\r\n\r\nhello\r\n"), false)
	out = e.mustRun("fetch", "--once", acct)
	if !strings.Contains(out, "1 new tickets") {
		t.Fatalf("second fetch:\n%s\nwant exactly the new mail", out)
	}
	out = e.mustRun("tickets", "list")
	if strings.Count(out, "\n") != 5 || !strings.Contains(out, "triggers-suppressed") {
		t.Errorf("tickets list:\n%s\nwant 4 tickets, imported ones marked triggers-suppressed", out)
	}
}

// TestAccountsListShowsQuota: when Gmail reports its daily limit the admin
// sees it in `accounts list`.
func TestAccountsListShowsQuota(t *testing.T) {
	e := newAccountsEnv(t)
	const acct = "desk@acme.test"
	e.addAccount(acct, 0)
	out := e.mustRun("accounts", "list")
	if !strings.Contains(out, "[----------] 0/500") {
		t.Fatalf("accounts list:\n%s\nwant an empty quota bar", out)
	}
	q := smtprelay.NewQuota(smtprelay.NewQueue(e.redis.Client(t), smtprelay.QueueOptions{}))
	if err := q.Block(context.Background(), acct); err != nil {
		t.Fatal(err)
	}
	out = e.mustRun("accounts", "list")
	if !strings.Contains(out, "BLOCKED by Gmail") || !strings.Contains(out, "Gmail reported its daily sending limit") {
		t.Errorf("accounts list after Gmail's limit:\n%s", out)
	}
}

func TestAccountsSetSending(t *testing.T) {
	e := newAccountsEnv(t)
	const acct = "desk@gmail.com"
	e.addAccount(acct, 0)
	e.mustRun("accounts", "set", acct, "--send-via-gmail=false", "--fallback", "rewrite-from")
	a := e.list()[0]
	if a.SendViaGmail || a.Fallback != "rewrite-from" {
		t.Fatalf("after accounts set: %+v", a)
	}
	if code, _, stderr := e.run("accounts", "set", acct, "--fallback", "sideways"); code == 0 || !strings.Contains(stderr, "want direct") {
		t.Errorf("bad fallback accepted: %d %s", code, stderr)
	}
}

// TestAccountsSetAlias: aliases are added, listed (text and JSON), kept
// with one account only, and removed, without touching the sending policy.
func TestAccountsSetAlias(t *testing.T) {
	e := newAccountsEnv(t)
	const acct, other = "desk@acme.test", "sales@acme.test"
	e.addAccount(acct, 0)
	e.addAccount(other, 0)
	e.mustRun("accounts", "set", acct, "--send-via-gmail=false")
	e.mustRun("accounts", "set", acct, "--alias", "Support@Acme.test", "--alias", "help@acme.test")
	a := e.list()[0]
	if !slices.Equal(a.Aliases, []string{"help@acme.test", "support@acme.test"}) || a.SendViaGmail {
		t.Fatalf("after --alias: aliases %v, send via Gmail %v; want both aliases, lower-cased, and sending left off", a.Aliases, a.SendViaGmail)
	}
	wantOutput(t, "accounts list", e.mustRun("accounts", "list"), "help@acme.test, support@acme.test")
	code, _, stderr := e.run("accounts", "set", other, "--alias", "support@acme.test")
	if code == 0 || !strings.Contains(stderr, "belongs to another account") || !strings.Contains(stderr, acct) {
		t.Errorf("alias of another account: exit %d, %s", code, stderr)
	}
	if code, _, stderr := e.run("accounts", "set", acct, "--alias", "not an address"); code == 0 || !strings.Contains(stderr, "not a bare email address") {
		t.Errorf("bad alias accepted: exit %d, %s", code, stderr)
	}
	e.mustRun("accounts", "set", acct, "--remove-alias", "support@acme.test")
	if a := e.list()[0]; !slices.Equal(a.Aliases, []string{"help@acme.test"}) {
		t.Errorf("after --remove-alias: %v", a.Aliases)
	}
	e.mustRun("accounts", "set", other, "--alias", "support@acme.test")
}

func TestStatus(t *testing.T) {
	e := newAccountsEnv(t)
	const acct = "desk@acme.test"
	e.addAccount(acct, 0)
	q := smtprelay.NewQueue(e.redis.Client(t), smtprelay.QueueOptions{})
	q.Put(context.Background(), &smtprelay.Message{From: acct, To: []string{"a@b.test"}, Data: []byte("Subject: x\r\n\r\nx\r\n")})
	out := e.mustRun("status")
	wantOutput(t, "status", out, acct, "[----------] 0/500", "relay queue: 1 messages")
	var st struct {
		Accounts []struct{ Email string }
		Queue    struct{ Depth int }
	}
	if err := json.Unmarshal([]byte(e.mustRun("status", "--json")), &st); err != nil || len(st.Accounts) != 1 || st.Queue.Depth != 1 {
		t.Errorf("status --json = %+v, %v", st, err)
	}
	// No delivery worker made the queue's consumer group (as after Redis
	// came back empty): status says delivery is stopped, until one does.
	wantOutput(t, "status without the delivery group", out, "relay delivery: STOPPED: the delivery queue is missing from Redis")
	if err := q.EnsureGroup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if out := e.mustRun("status"); strings.Contains(out, "STOPPED") {
		t.Errorf("status with the delivery group still says stopped:\n%s", out)
	}
}

func TestFallbackWarnings(t *testing.T) {
	all := []*accounts.Account{
		{Email: "a@gmail.com", Fallback: accounts.FallbackDirect},
		{Email: "b@acme.example", Fallback: accounts.FallbackDirect},
		{Email: "c@gmail.com", Fallback: accounts.FallbackRewriteFrom},
		{Email: "d@gmail.com"},
	}
	signs := func(d string) bool { return d == "acme.example" }
	got := fallbackWarnings(all, signs, "")
	if len(got) != 2 || !strings.HasPrefix(got[0], "a@gmail.com: fallback direct") || !strings.HasPrefix(got[1], "c@gmail.com: fallback rewrite-from needs") {
		t.Errorf("fallbackWarnings = %q", got)
	}
	if got := fallbackWarnings(all[2:], signs, "helpdesk@acme.example"); len(got) != 0 {
		t.Errorf("rewrite-from to a signed domain warned: %q", got)
	}
}

// fetch --once after a crash: the lease the dead process left is taken
// over and the mail imported; while a live process holds the lease, fetch
// names it and its expiry and exits 0 without fetching.
func TestFetchOnceLease(t *testing.T) {
	e := newAccountsEnv(t)
	gm, err := fakegmail.New(fakegmail.Options{Validate: e.google.Validate})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := gm.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gm.Close() })
	e.global = append(e.global, "--set", "google.imap_addr="+addr.String(), "--set", "google.imap_tls=plain")
	const acct = "support@acme.test"
	gm.AddUser(acct)
	e.addAccount(acct, 0)
	acc := e.store()
	host := accounts.NewHolder("").Host
	hold := func(h accounts.Holder) accounts.Lease {
		t.Helper()
		l, err := acc.AcquireLease(context.Background(), acct, h, time.Minute)
		if err != nil || !l.Mine {
			t.Fatalf("AcquireLease(%v) = %+v, %v", h, l, err)
		}
		return l
	}
	mail := func(n int) {
		gm.Deliver(acct, []byte(fmt.Sprintf("From: c%d@customer.test\r\nTo: %s\r\nSubject: help %d\r\nMessage-ID: <h%d@customer.test>\r\n\r\nhello\r\n", n, acct, n, n)), false)
	}

	hold(accounts.Holder{Host: host, PID: proctest.GonePID(t), Token: "crashed"})
	mail(1)
	if out := e.mustRun("fetch", "--once", acct); !strings.Contains(out, "1 new tickets") {
		t.Fatalf("fetch over a crashed process's lease:\n%s\nwant the mail imported", out)
	}

	live := accounts.Holder{Host: host, PID: proctest.LivePID(t), Token: "serve"}
	l := hold(live)
	mail(2)
	out := e.mustRun("fetch", "--once", acct)
	t.Logf("fetch --once said: %s", out)
	want := acct + ": lease held by " + live.Process() + " (alive) until "
	if !strings.Contains(out, want) || strings.Contains(out, "new tickets") {
		t.Fatalf("fetch while a live process holds the lease:\n%s\nwant %q and its expiry %s, and nothing fetched", out, want, l.Until.Local().Format(time.TimeOnly))
	}
	if n := gm.Logins(acct); n != 1 {
		t.Errorf("%d logins, want 1: fetch logged in while another process held the lease", n)
	}
}
