package tickets

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/redistest"
)

// batchOf makes a batch of raw mails, parsed by IngestBatch.
func batchOf(raws ...[]byte) []BatchMail {
	out := make([]BatchMail, len(raws))
	for i, raw := range raws {
		out[i] = BatchMail{Raw: raw}
	}
	return out
}

func mustBatch(t *testing.T, s *Store, mails []BatchMail) []Result {
	t.Helper()
	var out []Result
	for i, r := range s.IngestBatch(context.Background(), mails) {
		if r.Err != nil {
			t.Fatalf("IngestBatch: mail %d: %v", i, r.Err)
		}
		out = append(out, r.Result)
	}
	return out
}

// TestBatchReplyThreadsOntoTicketOpenedInSameBatch: a FETCH batch holding
// a question and its answer yields one ticket with two comments, as two
// separate ingests would.
func TestBatchReplyThreadsOntoTicketOpenedInSameBatch(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	rs := mustBatch(t, s, batchOf(
		mail("alice@customer.test", "Broken", "it broke", "Message-ID: <q@c.test>", "Cc: carol@customer.test"),
		mail("bob@customer.test", "Other", "another thing", "Message-ID: <o@c.test>"),
		mail("alice@customer.test", "Re: Broken", "still broken", "Message-ID: <a@c.test>", "In-Reply-To: <q@c.test>"),
		mail("carol@customer.test", "Re: [#1] Broken", "me too", "Message-ID: <t@c.test>"),
	))
	if !rs[0].Created || !rs[1].Created || rs[0].Ticket == rs[1].Ticket {
		t.Fatalf("first two mails = %+v, %+v; want two new tickets", rs[0], rs[1])
	}
	if rs[2].Ticket != rs[0].Ticket || rs[2].Comment != 2 || rs[2].ThreadedBy != ruleInReplyTo {
		t.Errorf("reply = %+v, want comment 2 of #%d by in-reply-to", rs[2], rs[0].Ticket)
	}
	if rs[3].Ticket != 1 || rs[3].Comment != 3 || rs[3].ThreadedBy != ruleSubjectToken {
		t.Errorf("subject-token mail = %+v, want comment 3 of #1", rs[3])
	}
	tk := mustGet(t, s, rs[0].Ticket)
	if len(tk.Comments) != 3 || tk.Comments[1].MessageID != "a@c.test" || tk.Comments[1].ThreadedBy != ruleInReplyTo {
		t.Errorf("ticket #%d = %+v, want the question, the reply and carol's mail (CC'd on the question)", rs[0].Ticket, tk.Comments)
	}
	evs := rdb.XRange(context.Background(), s.Key("events"), "-", "+").Val()
	var types []string
	for _, e := range evs {
		types = append(types, e.Values["type"].(string))
	}
	if want := []string{"ticket.created", "ticket.created", "ticket.comment", "ticket.comment"}; !slices.Equal(types, want) {
		t.Errorf("events = %v, want %v in the batch's order", types, want)
	}
	for i, r := range rs {
		if r.EventID != evs[i].ID {
			t.Errorf("mail %d: event id %s, want %s", i, r.EventID, evs[i].ID)
		}
	}
}

// TestBatchWithSameMailTwiceYieldsOneTicket: Gmail can list a mail twice
// (two labels); the second copy in the same batch is a duplicate.
func TestBatchWithSameMailTwiceYieldsOneTicket(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	m := mail("alice@customer.test", "Twice", "x", "Message-ID: <twice@c.test>")
	noID := mail("bob@customer.test", "No id", "y")
	rs := mustBatch(t, s, batchOf(m, noID, m, noID))
	if !rs[0].Created || !rs[1].Created {
		t.Fatalf("first copies = %+v, %+v; want new tickets", rs[0], rs[1])
	}
	for i, j := range map[int]int{2: 0, 3: 1} {
		if !rs[i].Duplicate || rs[i].Ticket != rs[j].Ticket || rs[i].EventID != "" {
			t.Errorf("mail %d = %+v, want a duplicate of #%d", i, rs[i], rs[j].Ticket)
		}
	}
	if n := rdb.XLen(context.Background(), s.Key("events")).Val(); n != 2 {
		t.Errorf("%d events, want 2", n)
	}
	if n := rdb.ZCard(context.Background(), s.Key("tickets")).Val(); n != 2 {
		t.Errorf("%d tickets, want 2", n)
	}
}

// TestConcurrentOverlappingBatchesStoreEachMailOnce: fetchers in several
// processes (one Store each) ingest batches that overlap: every mail is
// one ticket, ids have no gap, each mail has one event.
func TestConcurrentOverlappingBatchesStoreEachMailOnce(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	const mails, width, workers = 60, 20, 6
	raws := make([][]byte, mails)
	for i := range raws {
		raws[i] = mail(fmt.Sprintf("c%d@customer.test", i), "Overlap", "x", fmt.Sprintf("Message-ID: <ov%d@c.test>", i))
	}
	got := make([]map[int]int64, workers) // mail -> ticket, per worker
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := NewStore(rdb, Options{})
			got[w] = map[int]int64{}
			// Each worker walks the mails in overlapping windows, from
			// its own starting point.
			for start := w * 7 % mails; ; start += width / 2 {
				var batch []BatchMail
				var idx []int
				for i := start; i < start+width; i++ {
					batch = append(batch, BatchMail{Raw: raws[i%mails]})
					idx = append(idx, i%mails)
				}
				for j, r := range st.IngestBatch(context.Background(), batch) {
					if r.Err != nil || r.Suppressed != "" || r.Ticket == 0 {
						t.Errorf("worker %d mail %d: %+v", w, idx[j], r)
						return
					}
					got[w][idx[j]] = r.Ticket
				}
				if len(got[w]) == mails {
					return
				}
			}
		}()
	}
	wg.Wait()
	seen := map[int64]int{}
	for i := range mails {
		for w := range workers {
			if got[w][i] != got[0][i] {
				t.Fatalf("mail %d: worker %d got #%d, worker 0 #%d", i, w, got[w][i], got[0][i])
			}
		}
		seen[got[0][i]]++
	}
	for id := int64(1); id <= mails; id++ {
		if seen[id] != 1 {
			t.Fatalf("ticket #%d is named by %d mails, want 1 (tickets %v)", id, seen[id], seen)
		}
	}
	if n := rdb.XLen(context.Background(), s.Key("events")).Val(); n != mails {
		t.Errorf("%d events, want %d", n, mails)
	}
}

// TestStaleMailInBatchStillGetsItsTicket: between the batch's look and its
// script, another process opens a ticket and registers the Message-ID a
// mail of the batch answers. The mails before it are stored by the first
// script call; that mail and the rest are looked at again, and each gets
// the ticket it would have had alone.
func TestStaleMailInBatchStillGetsItsTicket(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	ctx := context.Background()
	first := mustIngest(t, s, mail("bob@customer.test", "Invoice", "x", "Message-ID: <inv@c.test>"), Source{})
	other := NewStore(rdb, Options{})
	var calls int
	afterLook = func() {
		if calls++; calls > 1 {
			return
		}
		mustIngest(t, other, mail("dave@customer.test", "Meanwhile", "x", "Message-ID: <w@c.test>"), Source{})
		if err := other.RegisterOutbound(ctx, first.Ticket, "note@acme.test"); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { afterLook = nil })
	rs := mustBatch(t, s, batchOf(
		mail("alice@customer.test", "New", "x", "Message-ID: <x@c.test>"),
		mail("bob@customer.test", "Re: Invoice", "y", "Message-ID: <y@c.test>", "In-Reply-To: <note@acme.test>"),
		mail("carol@customer.test", "Newer", "z", "Message-ID: <z@c.test>"),
	))
	if calls < 1 {
		t.Fatal("the other process never ran")
	}
	if !rs[0].Created || rs[0].Ticket != 3 {
		t.Errorf("first mail = %+v, want ticket #3 (#2 taken meanwhile)", rs[0])
	}
	if rs[1].Ticket != first.Ticket || rs[1].ThreadedBy != ruleInReplyTo {
		t.Errorf("reply to the registered notification = %+v, want #%d by in-reply-to", rs[1], first.Ticket)
	}
	if !rs[2].Created || rs[2].Ticket != 4 {
		t.Errorf("last mail = %+v, want ticket #4", rs[2])
	}
	if n := rdb.XLen(ctx, s.Key("events")).Val(); n != 5 {
		t.Errorf("%d events, want 5 (2 before, 3 of the batch)", n)
	}
}

// TestRedisKilledMidBatchStoresNothingHalf: Redis dies between the
// batch's first round trip and its script: every mail of the batch gets
// an error (so imapfetch leaves them unread), nothing of them is a ticket
// or an event after Redis comes back from its AOF, and the same batch
// ingested again yields each mail once.
func TestRedisKilledMidBatchStoresNothingHalf(t *testing.T) {
	srv := redistest.Start(t, "appendonly yes", "appendfsync always")
	rdb := srv.Client(t)
	s := NewStore(rdb, Options{})
	ctx := context.Background()
	before := mustIngest(t, s, mail("alice@customer.test", "Before", "x", "Message-ID: <b@c.test>"), Source{})
	batch := batchOf(
		mail("bob@customer.test", "One", "x", "Message-ID: <k1@c.test>"),
		mail("alice@customer.test", "Re: Before", "y", "Message-ID: <k2@c.test>", "In-Reply-To: <b@c.test>"),
		mail("carol@customer.test", "Three", "z", "Message-ID: <k3@c.test>"),
	)
	afterLook = srv.Kill
	t.Cleanup(func() { afterLook = nil })
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for i, r := range s.IngestBatch(tctx, batch) {
		if r.Err == nil {
			t.Errorf("mail %d with Redis killed: %+v, want an error", i, r.Result)
		}
	}
	afterLook = nil
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, s.Key("events")).Val(); n != 1 {
		t.Errorf("after the restart: %d events, want only the one before", n)
	}
	if n := rdb.Exists(ctx, s.Key("seen:id:k1@c.test"), s.Key("seen:id:k2@c.test"), s.Key("seen:id:k3@c.test")).Val(); n != 0 {
		t.Errorf("after the restart: %d of the batch's mails marked seen, want none", n)
	}
	if tk := mustGet(t, s, before.Ticket); len(tk.Comments) != 1 || tk.CommentCount != 1 {
		t.Errorf("ticket #%d = %d comments (count %d), want 1", before.Ticket, len(tk.Comments), tk.CommentCount)
	}
	rs := mustBatch(t, s, batch)
	if !rs[0].Created || rs[1].Ticket != before.Ticket || rs[1].Comment != 2 || !rs[2].Created || rs[2].Ticket != rs[0].Ticket+1 {
		t.Errorf("batch again = %+v", rs)
	}
	if n := rdb.XLen(ctx, s.Key("events")).Val(); n != 4 {
		t.Errorf("%d events, want 4", n)
	}
}
