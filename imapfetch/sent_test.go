package imapfetch

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/tickets"
)

// agentReply is an answer the account's owner wrote in Gmail to test mail
// n (testMail), as Gmail files it in the Sent folder.
func agentReply(account string, n int, id string) []byte {
	return []byte(fmt.Sprintf("From: Support <%s>\r\nTo: Customer %d <c%d@customer.test>\r\n"+
		"Subject: Re: Help number %d\r\nMessage-ID: <%s>\r\nIn-Reply-To: <m%d.%s>\r\nReferences: <m%d.%s>\r\n"+
		"Date: Tue, 24 Nov 2026 11:00:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"+
		"Answered from Gmail.\r\n", account, n, n, n, id, n, account, n, account))
}

func (e *env) appendSent(email string, raw []byte) {
	e.t.Helper()
	if _, err := e.gm.AppendSent(email, raw); err != nil {
		e.t.Fatalf("AppendSent: %v", err)
	}
}

func (e *env) sentCursor(email string) accounts.Cursor {
	e.t.Helper()
	c, err := e.acc.SentCursor(context.Background(), email)
	if err != nil {
		e.t.Fatalf("SentCursor(%s): %v", email, err)
	}
	return c
}

// lastEvent is the newest entry of the events stream.
func (e *env) lastEvent() tickets.Event {
	e.t.Helper()
	evs := e.rdb.XRevRangeN(context.Background(), e.st.Key("events"), "+", "-", 1).Val()
	if len(evs) == 0 {
		e.t.Fatal("no events")
	}
	ev, err := tickets.DecodeEvent(evs[0])
	if err != nil {
		e.t.Fatal(err)
	}
	return ev
}

func TestSentFolderAgentReplies(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	e.deliver(alice, 1, false)
	// Written in Gmail before the option was on: sent history, never read.
	e.appendSent(alice, agentReply(alice, 1, "old@example.com"))

	// Option off: the Sent folder is not read at all.
	if rep := pollOnce(t, New(e.acc, e.st, e.options()), alice); rep.Created != 1 || rep.Comments != 0 {
		t.Fatalf("poll without sent_folder = %+v, want one new ticket", rep)
	}
	if c := e.sentCursor(alice); c != (accounts.Cursor{}) {
		t.Fatalf("sent cursor = %+v without sent_folder, want none: the folder was read", c)
	}

	o := e.options()
	o.SentFolder = true
	f := New(e.acc, e.st, o)
	if rep := pollOnce(t, f, alice); rep.Fetched != 0 {
		t.Fatalf("first poll with sent_folder = %+v, want nothing: earlier sent mail is not read", rep)
	}
	if c := e.sentCursor(alice); c.LastUID != 1 || c.UIDValidity == 0 {
		t.Fatalf("sent cursor = %+v, want it at the folder's end (uid 1)", c)
	}

	// Now: an agent's answer, a notification mailgate sent through Gmail,
	// and a private mail that answers no ticket; and new INBOX mail.
	e.appendSent(alice, agentReply(alice, 1, "answer@example.com"))
	if err := e.st.RegisterSent(context.Background(), "notify@example.com"); err != nil {
		t.Fatal(err)
	}
	e.appendSent(alice, agentReply(alice, 1, "notify@example.com"))
	e.appendSent(alice, []byte("From: "+alice+"\r\nTo: friend@elsewhere.test\r\nSubject: Lunch?\r\n"+
		"Message-ID: <lunch@example.com>\r\nDate: Tue, 24 Nov 2026 12:00:00 +0100\r\n\r\nNoon?\r\n"))
	e.deliver(alice, 2, false)

	rep := pollOnce(t, f, alice)
	if rep.Comments != 1 || rep.Skipped != 2 || rep.Created != 1 || rep.Errors != 0 {
		t.Fatalf("poll = %+v, want one agent comment, two skipped, one new INBOX ticket", rep)
	}
	tk := e.tickets()["Help number 1"]
	if tk == nil {
		t.Fatal("ticket of mail 1 is gone")
	}
	full, err := e.st.Get(context.Background(), tk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Comments) != 2 || full.Comments[1].Role != tickets.RoleAgent || full.Comments[1].MessageID != "answer@example.com" {
		t.Fatalf("comments = %+v, want the customer's mail and the agent's answer", full.Comments)
	}
	if n := e.ticketCount(); n != 2 {
		t.Errorf("%d tickets, want 2: sent mail never opens one", n)
	}
	// The agent's comment event came before INBOX's new ticket.
	evs := e.rdb.XRange(context.Background(), e.st.Key("events"), "-", "+").Val()
	var agent int
	for _, m := range evs {
		ev, _ := tickets.DecodeEvent(m)
		if ev.Author == "agent" {
			agent++
			if ev.Type != tickets.EventTicketComment || !ev.SuppressTriggers || ev.Ticket != tk.ID {
				t.Errorf("agent event = %+v, want a comment on #%d that triggers nothing", ev, tk.ID)
			}
		}
	}
	if agent != 1 {
		t.Errorf("%d agent events, want 1", agent)
	}
	if c := e.sentCursor(alice); c.LastUID != 4 {
		t.Errorf("sent cursor = %+v, want last_uid 4", c)
	}
	if rep := pollOnce(t, f, alice); rep.Fetched != 0 {
		t.Errorf("poll again = %+v, want nothing", rep)
	}
}

// A Gmail in another language names the folder otherwise; it is found by
// its \Sent attribute all the same.
func TestSentFolderLocalisedName(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	if err := e.gm.SetSentName(alice, "[Gmail]/Gesendet"); err != nil {
		t.Fatal(err)
	}
	o := e.options()
	o.SentFolder = true
	stop := e.start(New(e.acc, e.st, o))
	defer stop()
	e.deliver(alice, 1, false)
	waitFor(t, 10*time.Second, "the ticket", func() bool { return e.ticketCount() == 1 })
	waitFor(t, 10*time.Second, "the sent cursor", func() bool {
		c, _ := e.acc.SentCursor(context.Background(), alice)
		return c.UIDValidity != 0
	})
	e.appendSent(alice, agentReply(alice, 1, "answer@example.com"))
	waitFor(t, 10*time.Second, "the agent's comment", func() bool {
		tk := e.tickets()["Help number 1"]
		return tk != nil && tk.CommentCount == 2
	})
	if ev := e.lastEvent(); ev.Author != "agent" || !ev.SuppressTriggers {
		t.Errorf("last event = %+v, want the agent's comment", ev)
	}
	// INBOX is selected again after each read of Sent: its mail still
	// arrives.
	e.deliver(alice, 2, false)
	waitFor(t, 10*time.Second, "the second ticket", func() bool { return e.ticketCount() == 2 })
}

// A Sent folder whose UIDVALIDITY changed is read again from its start, as
// INBOX is; what was added before comes back as duplicates, not twice.
func TestSentFolderUIDValidityChange(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	o := e.options()
	o.SentFolder = true
	f := New(e.acc, e.st, o)
	e.deliver(alice, 1, false)
	pollOnce(t, f, alice)
	e.appendSent(alice, agentReply(alice, 1, "answer@example.com"))
	if rep := pollOnce(t, f, alice); rep.Comments != 1 {
		t.Fatalf("poll = %+v, want the agent's comment", rep)
	}
	c := e.sentCursor(alice)
	if err := e.acc.SetSentCursor(context.Background(), alice, accounts.Cursor{UIDValidity: c.UIDValidity + 1000, LastUID: 77}); err != nil {
		t.Fatal(err)
	}
	rep := pollOnce(t, f, alice)
	if rep.Fetched != 1 || rep.Duplicates != 1 || rep.Comments != 0 {
		t.Fatalf("poll after the UIDVALIDITY change = %+v, want the one sent mail read again as a duplicate", rep)
	}
	if got := e.sentCursor(alice); got != c {
		t.Errorf("sent cursor = %+v, want %+v again", got, c)
	}
	if tk := e.tickets()["Help number 1"]; tk == nil || tk.CommentCount != 2 {
		t.Errorf("ticket = %+v, want 2 comments", tk)
	}
}

// The Sent folder and INBOX number their mail each on its own, and may
// share a UIDVALIDITY: a failing mail in one does not use up the attempts
// of the mail with the same UID in the other. Counted together, the Sent
// mail's second failure would be the pair's third and quarantine it.
func TestSentFolderAttemptsApartFromInbox(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	if err := e.gm.SetUIDValidity(alice, fakegmail.SentMail, e.gm.UIDValidity(alice)); err != nil {
		t.Fatal(err)
	}
	fs := &flakyStore{Store: e.st, failTimes: map[string]int{"m1." + alice: 1, "answer@example.com": 2}}
	o := e.options()
	o.SentFolder = true
	o.MaxAttempts = 3
	f := New(e.acc, fs, o)
	pollOnce(t, f, alice)
	inboxUID := e.deliver(alice, 1, false)
	sentUID, err := e.gm.AppendSent(alice, agentReply(alice, 1, "answer@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if inboxUID != sentUID || e.cursor(alice).UIDValidity != e.sentCursor(alice).UIDValidity {
		t.Fatalf("INBOX uid %d (%+v), Sent uid %d (%+v): want the same UID under the same UIDVALIDITY",
			inboxUID, e.cursor(alice), sentUID, e.sentCursor(alice))
	}

	// Both fail: one attempt each.
	if rep := pollOnce(t, f, alice); rep.Errors != 2 || rep.Quarantined != 0 {
		t.Fatalf("poll 1 = %+v, want both mails failed once", rep)
	}
	// The answer fails again (its second attempt), the customer's mail
	// becomes a ticket.
	if rep := pollOnce(t, f, alice); rep.Errors != 1 || rep.Created != 1 || rep.Quarantined != 0 {
		t.Fatalf("poll 2 = %+v, want the answer failed again and a new ticket, nothing quarantined", rep)
	}
	// The answer goes through and joins the ticket.
	if rep := pollOnce(t, f, alice); rep.Comments != 1 || rep.Quarantined != 0 {
		t.Fatalf("poll 3 = %+v, want the agent's answer as a comment", rep)
	}
	if q, err := e.st.QuarantineList(context.Background()); err != nil || len(q) != 0 {
		t.Errorf("quarantined %+v, %v; want nothing", q, err)
	}
	if a := e.account(alice); a.Quarantined != 0 {
		t.Errorf("account Quarantined = %d, want 0", a.Quarantined)
	}
	if tk := e.tickets()["Help number 1"]; tk == nil || tk.CommentCount != 2 {
		t.Errorf("ticket = %+v, want the customer's mail and the agent's answer", tk)
	}
}
