package tickets

import (
	"context"
	"testing"
)

// agentMail is an answer an agent wrote in Gmail: from the support
// address, to the customer.
func agentMail(to, subject, msgID string, headers ...string) []byte {
	raw := "From: Acme Support <support@acme.test>\r\nTo: " + to + "\r\nSubject: " + subject + "\r\n" +
		"Message-ID: <" + msgID + ">\r\n"
	for _, h := range headers {
		raw += h + "\r\n"
	}
	raw += "Date: Tue, 24 Nov 2026 11:00:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nWe are on it.\r\n"
	return []byte(raw)
}

func TestAgentMailBecomesAgentComment(t *testing.T) {
	ctx := context.Background()
	s, rdb := newTestStore(t, Options{SenderRateLimit: 1, SenderRateWindow: 60e9})
	open := mustIngest(t, s, mail("alice@customer.test", "Printer on fire", "It smokes.", "Message-ID: <a1@customer.test>"), Source{})
	// The helpdesk solved it; the agent's answer must not reopen it.
	rdb.HSet(ctx, s.ticketKey(open.Ticket), "status", string(StatusSolved))
	r := mustIngest(t, s, agentMail("alice@customer.test", "Re: Printer on fire", "ag1@acme.test", "In-Reply-To: <a1@customer.test>"),
		Source{Agent: true})
	if r.Ticket != open.Ticket || r.Created || r.Skipped != "" || r.ThreadedBy != ruleInReplyTo {
		t.Fatalf("agent mail = %+v, want a comment on #%d threaded by in-reply-to", r, open.Ticket)
	}
	tk := mustGet(t, s, open.Ticket)
	if tk.Status != StatusSolved {
		t.Errorf("status = %s, want solved: an agent's answer reopens nothing", tk.Status)
	}
	if len(tk.Comments) != 2 || tk.Comments[1].Role != RoleAgent || tk.Comments[0].Role != "" {
		t.Fatalf("comments = %+v, want the second by the agent", tk.Comments)
	}
	evs := rdb.XRange(ctx, s.Key("events"), "-", "+").Val()
	e, err := DecodeEvent(evs[len(evs)-1])
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != EventTicketComment || e.Author != "agent" || !e.SuppressTriggers {
		t.Errorf("event = %+v, want a comment by the agent with triggers suppressed", e)
	}
	// The same mail read again is a duplicate.
	if again := mustIngest(t, s, agentMail("alice@customer.test", "Re: Printer on fire", "ag1@acme.test", "In-Reply-To: <a1@customer.test>"),
		Source{Agent: true}); !again.Duplicate {
		t.Errorf("second read = %+v, want a duplicate", again)
	}
}

func TestAgentMailSkipped(t *testing.T) {
	ctx := context.Background()
	s, rdb := newTestStore(t, Options{})
	open := mustIngest(t, s, mail("alice@customer.test", "Printer on fire", "It smokes.", "Message-ID: <a1@customer.test>"), Source{})
	before := rdb.XLen(ctx, s.Key("events")).Val()
	cases := []struct {
		name string
		raw  []byte
		reg  string // registered with RegisterSent first
		want string
	}{
		{"threads nowhere", agentMail("bob@elsewhere.test", "Lunch?", "ag2@acme.test"), "", SkipUnthreaded},
		{"subject token only", agentMail("alice@customer.test", "Re: [#1] Printer", "ag3@acme.test"), "", SkipUnthreaded},
		{"names a ticket its recipient is not part of", agentMail("mallory@other.test", "Fwd", "ag4@acme.test",
			"In-Reply-To: <a1@customer.test>"), "", SkipUnthreaded},
		{"sent by mailgate", agentMail("alice@customer.test", "Re: Printer", "ag5@acme.test",
			"In-Reply-To: <a1@customer.test>"), "ag5@acme.test", SkipOutbound},
		{"automatic", agentMail("alice@customer.test", "Out of office", "ag6@acme.test",
			"In-Reply-To: <a1@customer.test>", "Auto-Submitted: auto-replied"), "", SkipAutomatic},
	}
	for _, c := range cases {
		if c.reg != "" {
			if err := s.RegisterSent(ctx, "<"+c.reg+">"); err != nil {
				t.Fatal(err)
			}
		}
		r := mustIngest(t, s, c.raw, Source{Agent: true})
		if r.Skipped != c.want || r.Ticket != 0 || r.Created {
			t.Errorf("%s: %+v, want skipped %q", c.name, r, c.want)
		}
	}
	if n := rdb.XLen(ctx, s.Key("events")).Val(); n != before {
		t.Errorf("events = %d, want %d: a skipped mail publishes nothing", n, before)
	}
	if tk := mustGet(t, s, open.Ticket); tk.CommentCount != 1 {
		t.Errorf("ticket has %d comments, want 1", tk.CommentCount)
	}
	if n := rdb.ZCard(ctx, s.Key("tickets")).Val(); n != 1 {
		t.Errorf("%d tickets, want 1: an agent's mail opens none", n)
	}
	// A notification registered with its ticket is skipped as well.
	if err := s.RegisterOutbound(ctx, open.Ticket, "n1@acme.test"); err != nil {
		t.Fatal(err)
	}
	r := mustIngest(t, s, agentMail("alice@customer.test", "[#1] Update", "n1@acme.test", "In-Reply-To: <a1@customer.test>"), Source{Agent: true})
	if r.Skipped != SkipOutbound {
		t.Errorf("registered notification = %+v, want skipped as outbound", r)
	}
}
