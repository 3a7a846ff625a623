package tickets

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// EventType names what happened in an entry of the events stream (its
// "type" field). This list is the one home of the names: the ingest script
// gets them from Go, the relay and status use these constants, and the
// README's event table lists each one (a test keeps the two in step). A
// helpdesk must ignore types it does not know: later versions add more.
type EventType string

const (
	// EventTicketCreated: a mail opened a ticket; data is the Ticket with
	// its first comment, without the comment's body (Store.Comment reads
	// it: the body is stored once, in the ticket).
	EventTicketCreated EventType = "ticket.created"
	// EventTicketComment: a mail was added to a ticket; data is the Comment
	// without its body (Text, HTML), which Store.Comment reads.
	EventTicketComment EventType = "ticket.comment"
	// EventMailSuppressed: a mail opened nothing (an auto-reply, our own
	// mail coming back, a sender over its rate); data is the mail as a
	// Comment, the reason is in the entry's reason field.
	EventMailSuppressed EventType = "mail.suppressed"
	// EventMailBounced: a bounce (RFC 3464 DSN) of a mail the helpdesk
	// sent; data is the bounce as a Comment, ticket the one it is about.
	EventMailBounced EventType = "mail.bounced"
	// EventSenderRateLimited: one sender went over its rate, a mail loop in
	// the making; data is {"sender", "limit"}.
	EventSenderRateLimited EventType = "sender.rate_limited"
	// EventMailQuarantined: a mail that kept failing ingest was set aside;
	// data is the Quarantined record.
	EventMailQuarantined EventType = "mail.quarantined"
	// EventQuotaWarning: an account nears or reached its daily Gmail
	// sending limit; data is {"account", "used", "limit", "message"}.
	EventQuotaWarning EventType = "quota.warning"
	// EventDeliveryFailed: the relay gave up on some recipients of a
	// notification; data is {"queue_id", "message_id", "from", "failed"}.
	EventDeliveryFailed EventType = "delivery.failed"
)

// EventTypes returns every event type mailgate publishes.
func EventTypes() []EventType {
	return []EventType{EventTicketCreated, EventTicketComment, EventMailSuppressed, EventMailBounced,
		EventSenderRateLimited, EventMailQuarantined, EventQuotaWarning, EventDeliveryFailed}
}

// Event is one entry of the events stream, decoded.
type Event struct {
	ID               string // stream entry id, e.g. "1732540000000-0"
	Type             EventType
	Ticket           int64
	Comment          int64
	SuppressTriggers bool
	MessageID        string
	// Author is "agent" for an agent's answer read from the Sent folder
	// (its SuppressTriggers is true: nobody is to be notified); empty for
	// mail received.
	Author string
	Data   json.RawMessage
}

// DecodeEvent reads a stream entry as written by Ingest.
func DecodeEvent(m redis.XMessage) (Event, error) {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	e := Event{ID: m.ID, Type: EventType(str("type")), MessageID: str("message_id"), Author: str("author"), Data: json.RawMessage(str("data"))}
	e.Ticket, _ = strconv.ParseInt(str("ticket"), 10, 64)
	e.Comment, _ = strconv.ParseInt(str("comment"), 10, 64)
	e.SuppressTriggers = str("suppress_triggers") == "true"
	if e.Type == "" {
		return e, fmt.Errorf("event %s: no type field", m.ID)
	}
	return e, nil
}

// TicketData decodes the data of a ticket.created event.
func (e Event) TicketData() (*Ticket, error) {
	var t Ticket
	if err := json.Unmarshal(e.Data, &t); err != nil {
		return nil, fmt.Errorf("event %s: %w", e.ID, err)
	}
	return &t, nil
}

// CommentData decodes the data of a ticket.comment event (without the
// body: see Store.Comment) or of a noise event (the whole mail).
func (e Event) CommentData() (*Comment, error) {
	var c Comment
	if err := json.Unmarshal(e.Data, &c); err != nil {
		return nil, fmt.Errorf("event %s: %w", e.ID, err)
	}
	return &c, nil
}

// Publish appends an event that is not about a mail (quota.warning,
// delivery.failed, ...) to the stream: type, ticket (0 when none) and data
// as JSON, in the same shape as the ticket events.
func (s *Store) Publish(ctx context.Context, typ EventType, ticket int64, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	args := s.eventArgs("type", string(typ), "ticket", strconv.FormatInt(ticket, 10), "suppress_triggers", "false",
		"message_id", "", "data", string(b))
	return s.fail(ctx, s.rdb.XAdd(ctx, args).Err())
}

// eventArgs is an XADD of field-value pairs to the events stream, trimmed
// as the ingest script trims it.
func (s *Store) eventArgs(values ...any) *redis.XAddArgs {
	args := &redis.XAddArgs{Stream: s.eventsKey(), Values: values}
	if s.opts.StreamMaxLen > 0 {
		args.MaxLen, args.Approx = s.opts.StreamMaxLen, true
	}
	return args
}
