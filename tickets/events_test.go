package tickets

import (
	"context"
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
