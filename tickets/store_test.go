package tickets

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/redistest"
)

func newTestStore(t *testing.T, opts Options) (*Store, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	if opts.SupportAddresses == nil {
		opts.SupportAddresses = func(context.Context) ([]string, error) {
			return []string{"support@acme.test"}, nil
		}
	}
	return NewStore(rdb, opts), rdb
}

// mail builds a small RFC 5322 message; extra header lines come first.
func mail(from, subject, body string, headers ...string) []byte {
	var b strings.Builder
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "From: %s\r\nTo: Acme Support <support@acme.test>\r\nSubject: %s\r\n", from, subject)
	b.WriteString("Date: Tue, 24 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	b.WriteString(body + "\r\n")
	return []byte(b.String())
}

func mustIngest(t *testing.T, s *Store, raw []byte, src Source) Result {
	t.Helper()
	r, err := s.Ingest(context.Background(), raw, src)
	if err != nil {
		t.Fatalf("Ingest: %v", err)
	}
	return r
}

func mustGet(t *testing.T, s *Store, id int64) *Ticket {
	t.Helper()
	tk, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(#%d): %v", id, err)
	}
	return tk
}

func TestIngestCreatesTicket(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	raw := mail(`"Alice Martin" <Alice@Customer.test>`, "Printer on fire", "It smokes.",
		"Message-ID: <a1@customer.test>", "Cc: bob@customer.test, support@acme.test")
	r := mustIngest(t, s, raw, Source{Origin: "cli"})
	if !r.Created || r.Duplicate || r.Ticket != 1 || r.Comment != 1 {
		t.Fatalf("Ingest = %+v, want new ticket #1 comment 1", r)
	}
	tk := mustGet(t, s, r.Ticket)
	if tk.Requester != (Address{Name: "Alice Martin", Email: "alice@customer.test"}) {
		t.Errorf("requester = %+v", tk.Requester)
	}
	if tk.Subject != "Printer on fire" || tk.Status != StatusNew || tk.SupportAddress != "support@acme.test" {
		t.Errorf("ticket = %+v", tk)
	}
	if len(tk.CC) != 1 || tk.CC[0].Email != "bob@customer.test" {
		t.Errorf("CC = %+v, want only bob (support addresses are not CCs)", tk.CC)
	}
	if tk.SuppressTriggers || tk.Source != "cli" || tk.CommentCount != 1 {
		t.Errorf("suppress=%v source=%q count=%d", tk.SuppressTriggers, tk.Source, tk.CommentCount)
	}
	if len(tk.Comments) != 1 {
		t.Fatalf("comments = %d, want 1", len(tk.Comments))
	}
	c := tk.Comments[0]
	if strings.TrimSpace(c.Text) != "It smokes." || c.MessageID != "a1@customer.test" || c.Ticket != 1 || c.Index != 1 {
		t.Errorf("comment = %+v", c)
	}
	want := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	if !c.Date.Equal(want) {
		t.Errorf("comment date = %v, want the mail's own Date %v", c.Date, want)
	}
	got, err := s.Raw(context.Background(), c.Raw)
	if err != nil || string(got) != string(raw) {
		t.Errorf("Raw(%s) = %q, %v; want the original bytes", c.Raw, got, err)
	}
}

func TestIngestTwiceCreatesNothing(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	raw := mail("alice@customer.test", "Hello", "hi", "Message-ID: <dup@customer.test>")
	first := mustIngest(t, s, raw, Source{})
	// The same Message-ID with other bytes (as a relay may re-encode) is
	// still the same mail.
	second := mustIngest(t, s, append(raw, "\r\n"...), Source{})
	if !second.Duplicate || second.Ticket != first.Ticket || second.EventID != "" {
		t.Fatalf("second Ingest = %+v, want duplicate of #%d", second, first.Ticket)
	}
	if n := rdb.XLen(context.Background(), s.Key("events")).Val(); n != 1 {
		t.Errorf("events = %d, want 1", n)
	}
	if n := rdb.ZCard(context.Background(), s.Key("tickets")).Val(); n != 1 {
		t.Errorf("tickets = %d, want 1", n)
	}
}

func TestIngestWithoutMessageIDDedupesOnContent(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	raw := mail("alice@customer.test", "No id", "body")
	a := mustIngest(t, s, raw, Source{})
	b := mustIngest(t, s, raw, Source{})
	c := mustIngest(t, s, mail("alice@customer.test", "No id", "other body"), Source{})
	if !b.Duplicate || b.Ticket != a.Ticket {
		t.Errorf("same bytes again = %+v, want duplicate of #%d", b, a.Ticket)
	}
	if c.Duplicate || !c.Created {
		t.Errorf("different bytes = %+v, want a new ticket", c)
	}
}

func TestThreading(t *testing.T) {
	first := mail("alice@customer.test", "Order 77 missing", "where is it", "Message-ID: <orig@customer.test>")
	cases := []struct {
		name     string
		reply    []byte
		want     string // threaded_by, "" for a new ticket
		ticketID int64
	}{
		{"in-reply-to", mail("alice@customer.test", "Re: Order 77 missing", "still waiting",
			"Message-ID: <r1@customer.test>", "In-Reply-To: <orig@customer.test>"), "in-reply-to", 1},
		{"references", mail("alice@customer.test", "Re: Order 77 missing", "still waiting",
			"Message-ID: <r2@customer.test>", "References: <unknown@x.test> <orig@customer.test>"), "references", 1},
		{"subject token", mail("alice@customer.test", "Re: [#1] Order 77 missing", "me too",
			"Message-ID: <r3@customer.test>"), "subject-token", 1},
		{"stranger with subject token", mail("carol@other.test", "Re: [#1] Order 77 missing", "me too",
			"Message-ID: <r6@other.test>"), "", 2},
		{"stranger with in-reply-to", mail("mallory@elsewhere.test", "Re: Order 77 missing", "unsubscribe",
			"Message-ID: <r4@elsewhere.test>", "In-Reply-To: <orig@customer.test>"), "", 2},
		{"token of a missing ticket", mail("alice@customer.test", "[#999] hello", "x",
			"Message-ID: <r5@customer.test>"), "", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestStore(t, Options{})
			mustIngest(t, s, first, Source{})
			r := mustIngest(t, s, tc.reply, Source{})
			if r.ThreadedBy != tc.want || r.Ticket != tc.ticketID || r.Created != (tc.want == "") {
				t.Fatalf("Ingest(reply) = %+v, want ticket #%d threaded by %q", r, tc.ticketID, tc.want)
			}
			if tc.want == "" {
				return
			}
			tk := mustGet(t, s, 1)
			if len(tk.Comments) != 2 || tk.Comments[1].ThreadedBy != tc.want || tk.Comments[1].Index != 2 {
				t.Fatalf("ticket #1 comments = %+v, want the reply as comment 2", tk.Comments)
			}
		})
	}
}

func TestReplyToOutboundNotificationThreads(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	ctx := context.Background()
	r := mustIngest(t, s, mail("alice@customer.test", "Help", "please", "Message-ID: <q@customer.test>"), Source{})
	if err := s.RegisterOutbound(ctx, r.Ticket, "<notif-1@helpdesk.test>"); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterOutbound(ctx, 42, "<x@helpdesk.test>"); err == nil {
		t.Error("RegisterOutbound on a missing ticket succeeded")
	}
	reply := mustIngest(t, s, mail("alice@customer.test", "Re: Help", "thanks",
		"Message-ID: <a@customer.test>", "In-Reply-To: <notif-1@helpdesk.test>"), Source{})
	if reply.Ticket != r.Ticket || reply.ThreadedBy != "in-reply-to" {
		t.Fatalf("reply to notification = %+v, want comment on #%d", reply, r.Ticket)
	}
}

func TestConcurrentIngestYieldsOneTicket(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	raw := mail("alice@customer.test", "Race", "same mail from two fetchers", "Message-ID: <race@customer.test>")
	const n = 32
	var wg sync.WaitGroup
	results := make([]Result, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each goroutine has its own store, as separate processes would.
			st := NewStore(rdb, Options{})
			r, err := st.Ingest(context.Background(), raw, Source{})
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	created := 0
	for _, r := range results {
		if r.Created {
			created++
		}
		if r.Ticket != 1 {
			t.Errorf("result %+v names ticket %d, want 1", r, r.Ticket)
		}
	}
	if created != 1 {
		t.Fatalf("%d ingests created a ticket, want exactly 1", created)
	}
	if n := rdb.XLen(context.Background(), s.Key("events")).Val(); n != 1 {
		t.Errorf("events = %d, want 1", n)
	}
}

func TestRawIsCappedAndTagged(t *testing.T) {
	s, rdb := newTestStore(t, Options{MaxRawBytes: 100})
	raw := mail("alice@customer.test", "Big", strings.Repeat("x", 500), "Message-ID: <big@customer.test>")
	r := mustIngest(t, s, raw, Source{})
	c := mustGet(t, s, r.Ticket).Comments[0]
	if !c.RawTruncated || c.RawSize != int64(len(raw)) {
		t.Errorf("comment raw: truncated=%v size=%d, want true %d", c.RawTruncated, c.RawSize, len(raw))
	}
	if n := rdb.StrLen(context.Background(), s.Key(c.Raw)).Val(); n != 100 {
		t.Errorf("stored raw = %d bytes, want the cap 100", n)
	}
}

func TestSuppressTriggersAndTagsReachTicketAndEvent(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	r := mustIngest(t, s, mail("alice@customer.test", "Old mail", "x", "Message-ID: <old@customer.test>"),
		Source{SuppressTriggers: true, Tags: []string{"imported"}, SupportAddress: "Help@Acme.test"})
	tk := mustGet(t, s, r.Ticket)
	if !tk.SuppressTriggers || len(tk.Tags) != 1 || tk.Tags[0] != "imported" || tk.SupportAddress != "help@acme.test" {
		t.Errorf("ticket = %+v", tk)
	}
	ev := rdb.XRange(context.Background(), s.Key("events"), "-", "+").Val()
	if len(ev) != 1 || ev[0].Values["suppress_triggers"] != "true" {
		t.Errorf("events = %+v, want one with suppress_triggers=true", ev)
	}
}

func TestIngestSurvivesScriptCacheFlush(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	mustIngest(t, s, mail("a@customer.test", "one", "x", "Message-ID: <1@c.test>"), Source{})
	// A Redis restart or failover empties the script cache.
	if err := rdb.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	r := mustIngest(t, s, mail("a@customer.test", "two", "x", "Message-ID: <2@c.test>"), Source{})
	if r.Ticket != 2 {
		t.Fatalf("after SCRIPT FLUSH: %+v, want ticket #2", r)
	}
}

func TestListNewestFirst(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	for i := range 5 {
		mustIngest(t, s, mail("a@customer.test", fmt.Sprintf("t%d", i), "x", fmt.Sprintf("Message-ID: <l%d@c.test>", i)), Source{})
	}
	ts, err := s.List(context.Background(), ListOptions{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].ID != 5 || ts[1].ID != 4 {
		t.Fatalf("List = %v, want #5 #4", ids(ts))
	}
	ts, _ = s.List(context.Background(), ListOptions{BeforeID: 4})
	if len(ts) != 3 || ts[0].ID != 3 {
		t.Fatalf("List(before 4) = %v, want #3 #2 #1", ids(ts))
	}
}

func ids(ts []*Ticket) []int64 {
	var out []int64
	for _, t := range ts {
		out = append(out, t.ID)
	}
	return out
}
