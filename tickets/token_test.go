package tickets

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestStrangerSubjectTokenOpensRelatedTicket: a mail that writes "[#1]"
// without taking part in ticket #1 must not land in that conversation (nor
// in the notifications that follow it); it opens a ticket of its own that
// names #1 as related, in the stored ticket and in its ticket.created event.
func TestStrangerSubjectTokenOpensRelatedTicket(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	ctx := context.Background()
	first := mustIngest(t, s, mail("alice@customer.test", "Order 77", "where is it", "Message-ID: <o@c.test>"), Source{})

	r := mustIngest(t, s, mail("mallory@elsewhere.test", "Re: [#1] Order 77", "click this link",
		"Message-ID: <m@elsewhere.test>"), Source{})
	if !r.Created || r.Ticket == first.Ticket || r.ThreadedBy != "" {
		t.Fatalf("stranger's token mail = %+v, want a new ticket", r)
	}
	if r.RelatedTicket != first.Ticket || r.RelatedReason != RelatedSubjectTokenStranger {
		t.Errorf("result related = #%d %q, want #%d %q", r.RelatedTicket, r.RelatedReason, first.Ticket, RelatedSubjectTokenStranger)
	}
	if tk := mustGet(t, s, first.Ticket); len(tk.Comments) != 1 || tk.CommentCount != 1 {
		t.Errorf("ticket #%d has %d comments, want only alice's", first.Ticket, len(tk.Comments))
	}
	tk := mustGet(t, s, r.Ticket)
	if tk.RelatedTicket != first.Ticket || tk.RelatedReason != RelatedSubjectTokenStranger || tk.Requester.Email != "mallory@elsewhere.test" {
		t.Errorf("new ticket = %+v, want mallory's, related to #%d", tk, first.Ticket)
	}

	// What a helpdesk reading Redis itself sees: the ticket's JSON in
	// HGETALL, and the ticket.created event.
	h := rdb.HGetAll(ctx, s.ticketKey(r.Ticket)).Val()
	var stored map[string]any
	if err := json.Unmarshal([]byte(h["data"]), &stored); err != nil {
		t.Fatalf("stored ticket JSON %q: %v", h["data"], err)
	}
	if stored["related_ticket"] != float64(first.Ticket) || stored["related_reason"] != RelatedSubjectTokenStranger {
		t.Errorf("stored ticket JSON = %s, want related_ticket %d and its reason", h["data"], first.Ticket)
	}
	evs := rdb.XRange(ctx, s.Key("events"), r.EventID, r.EventID).Val()
	if len(evs) != 1 {
		t.Fatalf("event %s not on the stream", r.EventID)
	}
	e, err := DecodeEvent(evs[0])
	if err != nil {
		t.Fatal(err)
	}
	et, err := e.TicketData()
	if e.Type != EventTicketCreated || err != nil || et.RelatedTicket != first.Ticket || et.RelatedReason != RelatedSubjectTokenStranger {
		t.Errorf("event = %s %+v, %v; want ticket.created related to #%d", e.Type, et, err, first.Ticket)
	}

	// A ticket that names nothing carries neither field.
	if strings.Contains(rdb.HGet(ctx, s.ticketKey(first.Ticket), "data").Val(), "related_") {
		t.Error("ticket #1 JSON names a related ticket")
	}
}

// TestParticipantsSubjectTokenThreads: the requester, and whoever was on
// CC of one of the ticket's mails (the first or a later one), join the
// ticket by its token as before.
func TestParticipantsSubjectTokenThreads(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	first := mustIngest(t, s, mail("alice@customer.test", "Order 77", "where is it",
		"Message-ID: <o@c.test>", "Cc: bob@customer.test"), Source{})
	steps := []struct {
		who string
		raw []byte
	}{
		{"the requester", mail("Alice <ALICE@customer.test>", "Re: [#1] Order 77", "any news?",
			"Message-ID: <a2@c.test>", "Cc: carol@customer.test")},
		{"a CC of the first mail", mail("bob@customer.test", "Re: [#1] Order 77", "me too", "Message-ID: <b@c.test>")},
		{"a CC of a later mail", mail("carol@customer.test", "Re: [#1] Order 77", "and me", "Message-ID: <c@c.test>")},
	}
	for i, st := range steps {
		r := mustIngest(t, s, st.raw, Source{})
		if r.Created || r.Ticket != first.Ticket || r.ThreadedBy != ruleSubjectToken || r.RelatedTicket != 0 {
			t.Errorf("%s: %+v, want comment %d on #%d by subject token", st.who, r, i+2, first.Ticket)
		}
	}
	if tk := mustGet(t, s, first.Ticket); len(tk.Comments) != 1+len(steps) {
		t.Errorf("ticket #%d has %d comments, want %d", first.Ticket, len(tk.Comments), 1+len(steps))
	}
}

// TestTokenThreadingAnyone keeps the old rule for who asks for it: any
// sender's token joins the ticket.
func TestTokenThreadingAnyone(t *testing.T) {
	s, _ := newTestStore(t, Options{TokenThreadingAnyone: true})
	first := mustIngest(t, s, mail("alice@customer.test", "Order 77", "where is it", "Message-ID: <o@c.test>"), Source{})
	r := mustIngest(t, s, mail("mallory@elsewhere.test", "Re: [#1] Order 77", "hello", "Message-ID: <m@elsewhere.test>"), Source{})
	if r.Created || r.Ticket != first.Ticket || r.ThreadedBy != ruleSubjectToken || r.RelatedTicket != 0 {
		t.Fatalf("stranger's token with token_threading anyone = %+v, want comment 2 on #%d", r, first.Ticket)
	}
}

// TestStrangerTokenInBatch: the rule holds within one FETCH batch too,
// where the ticket and the stranger's mail arrive together.
func TestStrangerTokenInBatch(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	rs := mustBatch(t, s, batchOf(
		mail("alice@customer.test", "Order 77", "where is it", "Message-ID: <o@c.test>"),
		mail("mallory@elsewhere.test", "Re: [#1] Order 77", "hello", "Message-ID: <m@elsewhere.test>"),
		mail("alice@customer.test", "Re: [#1] Order 77", "any news?", "Message-ID: <a2@c.test>"),
	))
	if !rs[1].Created || rs[1].RelatedTicket != rs[0].Ticket {
		t.Errorf("stranger in batch = %+v, want a new ticket related to #%d", rs[1], rs[0].Ticket)
	}
	if rs[2].Ticket != rs[0].Ticket || rs[2].ThreadedBy != ruleSubjectToken {
		t.Errorf("requester in batch = %+v, want a comment on #%d", rs[2], rs[0].Ticket)
	}
}
