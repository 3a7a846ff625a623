package tickets

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// declaredKeysOnly runs before ingest.lua in TestIngestScriptDeclaresEveryKey:
// it shadows redis with one whose call refuses a key not in KEYS, as a
// strict cluster proxy would. Every command the script sends takes its key
// first.
const declaredKeysOnly = `
local real = redis
local declared = {}
for _, k in ipairs(KEYS) do declared[k] = true end
local redis = {call = function(cmd, key, ...)
  if not declared[key] then
    return real.error_reply('undeclared key ' .. tostring(key) .. ' in ' .. cmd)
  end
  return real.call(cmd, key, ...)
end}
`

// TestIngestScriptDeclaresEveryKey runs every path of the ingest script
// (new ticket, each threading rule, noise, bounce, rate limit, duplicate,
// and the stale retry of concurrent new tickets) with a redis.call that
// fails on any key not passed in KEYS.
func TestIngestScriptDeclaresEveryKey(t *testing.T) {
	real := ingestScript
	ingestScript = redis.NewScript(declaredKeysOnly + ingestLua)
	t.Cleanup(func() { ingestScript = real })

	s, rdb := newTestStore(t, Options{SenderRateLimit: 3, SenderRateWindow: time.Hour})
	ctx := context.Background()
	first := mustIngest(t, s, mail("alice@customer.test", "Order 77", "where is it", "Message-ID: <o@c.test>", "Cc: carol@customer.test"), Source{})
	if err := s.RegisterOutbound(ctx, first.Ticket, "n1@acme.test"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		raw  []byte
		want func(Result) bool
	}{
		{"in-reply-to", mail("alice@customer.test", "Re: Order 77", "x", "Message-ID: <r1@c.test>", "In-Reply-To: <o@c.test>"),
			func(r Result) bool { return r.Ticket == first.Ticket && r.ThreadedBy == ruleInReplyTo }},
		{"references", mail("alice@customer.test", "Re: Order 77", "x", "Message-ID: <r2@c.test>", "References: <x@c.test> <n1@acme.test>"),
			func(r Result) bool { return r.Ticket == first.Ticket && r.ThreadedBy == ruleReferences }},
		{"reference by a stranger", mail("bob@customer.test", "Re: Order 77", "x", "Message-ID: <r6@c.test>", "In-Reply-To: <o@c.test>"),
			func(r Result) bool { return r.Created && r.Ticket == first.Ticket+1 }},
		{"subject token", mail("carol@customer.test", "Re: [#1] Order 77", "x", "Message-ID: <r3@c.test>"),
			func(r Result) bool { return r.Ticket == first.Ticket && r.ThreadedBy == ruleSubjectToken }},
		{"subject token by a stranger", mail("erin@customer.test", "Re: [#1] Order 77", "x", "Message-ID: <r7@c.test>"),
			func(r Result) bool { return r.Created && r.RelatedTicket == first.Ticket }},
		{"auto-reply", mail("ooo@customer.test", "Away", "x", "Message-ID: <r4@c.test>", "Auto-Submitted: auto-replied", "In-Reply-To: <n1@acme.test>"),
			func(r Result) bool { return r.Suppressed == NoiseAutoReply && r.Ticket == first.Ticket }},
		{"bounce", readMail(t, "bounce.eml"), func(r Result) bool { return r.Suppressed == NoiseBounce }},
		{"duplicate", mail("alice@customer.test", "Order 77", "where is it", "Message-ID: <o@c.test>"),
			func(r Result) bool { return r.Duplicate && r.Ticket == first.Ticket }},
		{"rate limited", mail("alice@customer.test", "again", "x", "Message-ID: <r5@c.test>"),
			func(r Result) bool { return r.Suppressed == NoiseRateLimited }},
	}
	for _, st := range steps {
		r, err := s.Ingest(ctx, st.raw, Source{})
		if err != nil || !st.want(r) {
			t.Fatalf("%s: Ingest = %+v, %v", st.name, r, err)
		}
	}
	// A batch: a reply to a ticket opened earlier in it, and a mail twice.
	rs := mustBatch(t, s, batchOf(
		mail("dora@customer.test", "Batch", "x", "Message-ID: <k1@c.test>"),
		mail("dora@customer.test", "Re: Batch", "y", "Message-ID: <k2@c.test>", "In-Reply-To: <k1@c.test>"),
		mail("dora@customer.test", "Batch", "x", "Message-ID: <k1@c.test>"),
	))
	if !rs[0].Created || rs[1].Ticket != rs[0].Ticket || !rs[2].Duplicate {
		t.Fatalf("batch: %+v", rs)
	}
	// Several processes opening tickets at once: most of them find the next
	// id taken since they looked, and look again.
	ids := ingestConcurrently(t, rdb, 24)
	// The strangers' mails above opened the second and third tickets, the
	// batch the fourth.
	if want := first.Ticket + 3; ids[0] != want+1 || ids[len(ids)-1] != want+24 {
		t.Errorf("concurrent tickets = %v, want #%d..#%d", ids, want+1, want+24)
	}
}

// ingestConcurrently ingests n distinct new mails at once, each through
// its own Store (as separate processes would, so none knows of the
// others), and returns the ticket ids they got, sorted.
func ingestConcurrently(t *testing.T, rdb *redis.Client, n int) []int64 {
	t.Helper()
	var wg sync.WaitGroup
	ids := make([]int64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := NewStore(rdb, Options{})
			raw := mail(fmt.Sprintf("c%d@customer.test", i), "Concurrent", "x", fmt.Sprintf("Message-ID: <conc%d@c.test>", i))
			r, err := st.Ingest(context.Background(), raw, Source{})
			if err != nil || !r.Created {
				t.Errorf("Ingest(mail %d) = %+v, %v; want a new ticket", i, r, err)
			}
			ids[i] = r.Ticket
		}()
	}
	wg.Wait()
	slices.Sort(ids)
	return ids
}

// TestConcurrentNewTicketsGetEveryIDOnce: ingests racing for the next id
// each get their own, with no gap and no id given twice.
func TestConcurrentNewTicketsGetEveryIDOnce(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	const n = 40
	ids := ingestConcurrently(t, rdb, n)
	for i, id := range ids {
		if id != int64(i+1) {
			t.Fatalf("ticket ids = %v, want 1..%d each once", ids, n)
		}
	}
	if got := rdb.XLen(context.Background(), s.Key("events")).Val(); got != n {
		t.Errorf("%d events, want %d", got, n)
	}
	for _, id := range []int64{1, n} {
		if tk := mustGet(t, s, id); len(tk.Comments) != 1 || tk.Comments[0].Ticket != id {
			t.Errorf("ticket #%d = %+v, want its one comment", id, tk)
		}
	}
}

// TestRateLimitedEventIsJSONForAnySender: a sender whose address holds a
// quote and a backslash (legal in a quoted local part, RFC 5322 section
// 3.4.1) still gives every consumer valid JSON naming that sender.
func TestRateLimitedEventIsJSONForAnySender(t *testing.T) {
	s, rdb := newTestStore(t, Options{SenderRateLimit: 1, SenderRateWindow: time.Hour})
	ctx := context.Background()
	const sender = `we"ird\robot@loop.test`
	from := `"we\"ird\\robot"@loop.test`
	for i := range 2 {
		mustIngest(t, s, mail(from, "ping", "pong", fmt.Sprintf("Message-ID: <w%d@loop.test>", i)), Source{})
	}
	var found int
	for _, m := range rdb.XRange(ctx, s.Key("events"), "-", "+").Val() {
		e, err := DecodeEvent(m)
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != EventSenderRateLimited {
			continue
		}
		found++
		if !json.Valid(e.Data) {
			t.Fatalf("%s data is not JSON: %s", e.Type, e.Data)
		}
		var d struct {
			Sender string `json:"sender"`
			Limit  int    `json:"limit"`
		}
		if err := json.Unmarshal(e.Data, &d); err != nil || d.Sender != sender || d.Limit != 1 {
			t.Errorf("%s data = %s (%+v, %v), want sender %q and limit 1", e.Type, e.Data, d, err, sender)
		}
		if m.Values["sender"] != sender {
			t.Errorf("%s sender field = %q, want %q", e.Type, m.Values["sender"], sender)
		}
	}
	if found != 1 {
		t.Fatalf("%d %s events, want 1", found, EventSenderRateLimited)
	}
}

// TestIngestScriptHoldsNoEventName: the script publishes the names Go
// gives it, so EventType stays their one home.
func TestIngestScriptHoldsNoEventName(t *testing.T) {
	for _, typ := range EventTypes() {
		if strings.Contains(ingestLua, string(typ)) {
			t.Errorf("ingest.lua spells out %q: pass it from Go instead", typ)
		}
	}
}
