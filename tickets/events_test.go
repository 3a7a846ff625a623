package tickets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestConsumerGroupReadsEventsInOrder is what a helpdesk does: create a
// group, read with XREADGROUP, ack, and replay from the start when needed.
func TestConsumerGroupReadsEventsInOrder(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	ctx := context.Background()
	stream := s.Key("events")
	if err := rdb.XGroupCreateMkStream(ctx, stream, "helpdesk", "0").Err(); err != nil {
		t.Fatal(err)
	}
	mustIngest(t, s, mail("alice@customer.test", "First", "one", "Message-ID: <e1@c.test>"), Source{})
	mustIngest(t, s, mail("alice@customer.test", "Re: First", "two", "Message-ID: <e2@c.test>", "In-Reply-To: <e1@c.test>"), Source{})
	mustIngest(t, s, mail("bob@customer.test", "Second", "three", "Message-ID: <e3@c.test>"), Source{})

	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "helpdesk", Consumer: "c1", Streams: []string{stream, ">"}, Count: 10}).Result()
	if err != nil {
		t.Fatal(err)
	}
	msgs := res[0].Messages
	want := []struct {
		typ    EventType
		ticket int64
	}{{EventTicketCreated, 1}, {EventTicketComment, 1}, {EventTicketCreated, 2}}
	if len(msgs) != len(want) {
		t.Fatalf("read %d events, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		e, err := DecodeEvent(m)
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != want[i].typ || e.Ticket != want[i].ticket {
			t.Errorf("event %d = %s #%d, want %s #%d", i, e.Type, e.Ticket, want[i].typ, want[i].ticket)
		}
	}
	created, _ := DecodeEvent(msgs[0])
	tk, err := created.TicketData()
	if err != nil || tk.ID != 1 || tk.Subject != "First" || len(tk.Comments) != 1 || tk.Comments[0].MessageID != "e1@c.test" {
		t.Errorf("ticket.created data = %+v, %v", tk, err)
	}
	comment, _ := DecodeEvent(msgs[1])
	c, err := comment.CommentData()
	if err != nil || c.Ticket != 1 || c.Index != 2 || c.ThreadedBy != "in-reply-to" {
		t.Errorf("ticket.comment data = %+v, %v", c, err)
	}

	// Unacked entries stay pending for this consumer; after XACK none are.
	if p := rdb.XPending(ctx, stream, "helpdesk").Val(); p.Count != 3 {
		t.Errorf("pending before ack = %d, want 3", p.Count)
	}
	for _, m := range msgs {
		rdb.XAck(ctx, stream, "helpdesk", m.ID)
	}
	if p := rdb.XPending(ctx, stream, "helpdesk").Val(); p.Count != 0 {
		t.Errorf("pending after ack = %d, want 0", p.Count)
	}
	// Replay: a second group starting at 0 sees every event again.
	rdb.XGroupCreate(ctx, stream, "replay", "0")
	res, _ = rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "replay", Consumer: "c", Streams: []string{stream, ">"}}).Result()
	if len(res) != 1 || len(res[0].Messages) != 3 || res[0].Messages[0].ID != msgs[0].ID {
		t.Errorf("replay read %v, want the same 3 events", res)
	}
}

func TestPublishOtherEvents(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	ctx := context.Background()
	if err := s.Publish(ctx, EventQuotaWarning, 0, map[string]any{"account": "a@b.test", "used": 450}); err != nil {
		t.Fatal(err)
	}
	ev := rdb.XRange(ctx, s.Key("events"), "-", "+").Val()
	if len(ev) != 1 {
		t.Fatalf("%d events, want 1", len(ev))
	}
	e, err := DecodeEvent(ev[0])
	if err != nil || e.Type != EventQuotaWarning || string(e.Data) != `{"account":"a@b.test","used":450}` {
		t.Errorf("event = %+v, %v", e, err)
	}
}

// TestREADMEListsEveryEventType keeps the README's event table, which is
// what helpdesk developers read, and EventTypes, what mailgate publishes,
// the same list.
func TestREADMEListsEveryEventType(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "\n| `type` | `data` |\n|---|---|\n")
	if !ok {
		t.Fatal("README has no event table (a `type` | `data` header)")
	}
	var documented []EventType
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "| `") {
			break
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(line, "| `"), "`")
		documented = append(documented, EventType(name))
	}
	for _, typ := range EventTypes() {
		if !slices.Contains(documented, typ) {
			t.Errorf("event type %s is not in the README's event table", typ)
		}
	}
	for _, typ := range documented {
		if !slices.Contains(EventTypes(), typ) {
			t.Errorf("the README's event table lists %s, which is not an EventType", typ)
		}
	}
	if len(documented) != len(EventTypes()) {
		t.Errorf("the README's event table has %d rows, want one per event type (%d)", len(documented), len(EventTypes()))
	}
}

// TestTicketEventsCarryCommentsWithoutBody: a mail's body is stored once,
// in its ticket's comments list; the ticket events carry every other field
// of the comment, and a helpdesk reads the body by the entry's ticket and
// comment fields (LINDEX, or Store.Comment in Go). Noise, stored nowhere
// else, carries its whole mail.
func TestTicketEventsCarryCommentsWithoutBody(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	ctx := context.Background()
	mustIngest(t, s, mail("alice@customer.test", "Printer", "It smokes.", "Message-ID: <p1@c.test>"), Source{})
	mustIngest(t, s, mail("alice@customer.test", "Re: Printer", "Now it burns.", "Message-ID: <p2@c.test>", "In-Reply-To: <p1@c.test>"), Source{})
	mustIngest(t, s, mail("ooo@customer.test", "Away", "Back Monday.", "Message-ID: <p3@c.test>", "Auto-Submitted: auto-replied"), Source{})
	entries := rdb.XRange(ctx, s.Key("events"), "-", "+").Val()
	if len(entries) != 3 {
		t.Fatalf("%d events, want 3", len(entries))
	}
	var evs []Event
	for _, m := range entries {
		e, err := DecodeEvent(m)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	for i, want := range []string{"It smokes.", "Now it burns."} {
		e := evs[i]
		var fields map[string]any
		if err := json.Unmarshal(e.Data, &fields); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			cs, _ := fields["comments"].([]any)
			if len(cs) != 1 {
				t.Fatalf("ticket.created data = %s, want its first comment", e.Data)
			}
			fields, _ = cs[0].(map[string]any)
		}
		if _, ok := fields["text"]; ok || strings.Contains(string(e.Data), want) {
			t.Errorf("%s data carries the body: %s", e.Type, e.Data)
		}
		if fields["message_id"] != fmt.Sprintf("p%d@c.test", i+1) || fields["subject"] == nil || fields["raw"] == nil {
			t.Errorf("%s comment = %v, want every field but the body", e.Type, fields)
		}
		// What a helpdesk does with the entry's ticket and comment fields.
		raw, err := rdb.LIndex(ctx, s.Key(fmt.Sprintf("ticket:%d:comments", e.Ticket)), e.Comment-1).Result()
		var whole Comment
		if err != nil || json.Unmarshal([]byte(raw), &whole) != nil || whole.Ticket != e.Ticket || whole.Index != e.Comment ||
			strings.TrimSpace(whole.Text) != want || whole.MessageID != fields["message_id"] {
			t.Errorf("LINDEX for %s #%d/%d = %+v, %v; want the whole comment with %q", e.Type, e.Ticket, e.Comment, whole, err, want)
		}
		c, err := s.Comment(ctx, e.Ticket, e.Comment)
		if err != nil || strings.TrimSpace(c.Text) != want {
			t.Errorf("Comment(#%d, %d) = %+v, %v; want the body %q", e.Ticket, e.Comment, c, err, want)
		}
	}
	if c, err := s.Comment(ctx, 1, 3); !errors.Is(err, ErrNotFound) {
		t.Errorf("Comment(#1, 3) = %+v, %v; want ErrNotFound", c, err)
	}
	if noise, err := evs[2].CommentData(); err != nil || evs[2].Type != EventMailSuppressed || strings.TrimSpace(noise.Text) != "Back Monday." {
		t.Errorf("%s data = %s, want the whole mail", evs[2].Type, evs[2].Data)
	}

	// A comment as older versions stored it (no opening brace, no ids)
	// still reads.
	rdb.RPush(ctx, s.Key("ticket:1:comments"), `"author":{"name":"","email":"old@customer.test"},"subject":"Old","text":"kept"}`)
	rdb.HIncrBy(ctx, s.Key("ticket:1"), "comment_count", 1)
	if tk := mustGet(t, s, 1); len(tk.Comments) != 3 || tk.Comments[2].Text != "kept" || tk.Comments[2].Index != 3 {
		t.Errorf("ticket with an older comment = %+v", tk.Comments)
	}
}
