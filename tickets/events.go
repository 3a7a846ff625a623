package tickets

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Event types on the stream. A helpdesk must ignore types it does not know:
// later versions add more (mail.quarantined, quota.warning, ...).
const (
	EventTicketCreated = "ticket.created" // data: the Ticket with its first comment
	EventTicketComment = "ticket.comment" // data: the Comment
)

// Event is one entry of the events stream, decoded.
type Event struct {
	ID               string // stream entry id, e.g. "1732540000000-0"
	Type             string
	Ticket           int64
	Comment          int64
	SuppressTriggers bool
	MessageID        string
	Data             json.RawMessage
}

// DecodeEvent reads a stream entry as written by Ingest.
func DecodeEvent(m redis.XMessage) (Event, error) {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	e := Event{ID: m.ID, Type: str("type"), MessageID: str("message_id"), Data: json.RawMessage(str("data"))}
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

// CommentData decodes the data of a ticket.comment event.
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
func (s *Store) Publish(ctx context.Context, typ string, ticket int64, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	args := s.eventArgs("type", typ, "ticket", strconv.FormatInt(ticket, 10), "suppress_triggers", "false",
		"message_id", "", "data", string(b))
	return s.fail(ctx, s.rdb.XAdd(ctx, args).Err())
}

// eventArgs is an XADD of field-value pairs to the events stream, trimmed
// as the ingest script trims it.
func (s *Store) eventArgs(values ...any) *redis.XAddArgs {
	args := &redis.XAddArgs{Stream: s.Key("events"), Values: values}
	if s.opts.StreamMaxLen > 0 {
		args.MaxLen, args.Approx = s.opts.StreamMaxLen, true
	}
	return args
}
