package status

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/tickets"
)

// warningTypes are the event types RecentWarnings reports: those that ask
// something of an operator. The stream carries them beside the ticket
// events.
var warningTypes = []tickets.EventType{tickets.EventQuotaWarning, tickets.EventDeliveryFailed,
	tickets.EventMailQuarantined, tickets.EventSenderRateLimited}

// Warning is one recent warning event, made readable.
type Warning struct {
	ID      string            `json:"id"` // stream entry id
	At      time.Time         `json:"at"`
	Type    tickets.EventType `json:"type"`
	Account string            `json:"account,omitempty"`
	Ticket  int64             `json:"ticket,omitempty"`
	Message string            `json:"message"` // one line for a human
}

const (
	// scanPage is how many stream entries one XREVRANGE reads.
	scanPage = 500
	// scanMax bounds how far back RecentWarnings looks: warnings are rare
	// among the ticket events, and a status page must stay quick.
	scanMax = 10000
)

// RecentWarnings returns the n most recent warning events of the events
// stream at key, newest first, looking back over the last scanMax entries
// at most.
func RecentWarnings(ctx context.Context, rdb redis.UniversalClient, key string, n int) ([]Warning, error) {
	out := []Warning{}
	end := "+"
	for scanned := 0; scanned < scanMax && len(out) < n; {
		page, err := rdb.XRevRangeN(ctx, key, end, "-", scanPage).Result()
		if err != nil {
			return nil, fmt.Errorf("status: read events %s: %w", key, err)
		}
		for _, m := range page {
			typ, _ := m.Values["type"].(string)
			if !slices.Contains(warningTypes, tickets.EventType(typ)) {
				continue
			}
			out = append(out, warningOf(m))
			if len(out) == n {
				break
			}
		}
		if len(page) < scanPage {
			break
		}
		scanned += len(page)
		end = "(" + page[len(page)-1].ID // exclusive (Redis ≥ 6.2)
	}
	return out, nil
}

// warningOf turns a stream entry into a Warning. The data of each type is
// what its publisher writes: smtprelay (quota.warning, delivery.failed),
// tickets (mail.quarantined, sender.rate_limited).
func warningOf(m redis.XMessage) Warning {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	w := Warning{ID: m.ID, Type: tickets.EventType(str("type")), At: entryTime(m.ID)}
	w.Ticket, _ = strconv.ParseInt(str("ticket"), 10, 64)
	var d struct {
		Account string            `json:"account"`
		Message string            `json:"message"`
		Used    int               `json:"used"`
		Limit   int               `json:"limit"`
		QueueID string            `json:"queue_id"`
		From    string            `json:"from"`
		Failed  map[string]string `json:"failed"`
		Reason  string            `json:"reason"`
		Subject string            `json:"subject"`
		UID     uint32            `json:"uid"`
		Sender  string            `json:"sender"`
	}
	_ = json.Unmarshal([]byte(str("data")), &d) // a field missing leaves a plainer message
	switch w.Type {
	case tickets.EventQuotaWarning:
		w.Account, w.Message = d.Account, d.Message
		if w.Message == "" {
			w.Message = fmt.Sprintf("%s has sent %d of its %d daily Gmail messages", d.Account, d.Used, d.Limit)
		}
	case tickets.EventDeliveryFailed:
		w.Account = d.From
		rcpts := make([]string, 0, len(d.Failed))
		for r := range d.Failed {
			rcpts = append(rcpts, r)
		}
		slices.Sort(rcpts)
		w.Message = fmt.Sprintf("delivery failed for %s (queue id %s)", strings.Join(rcpts, ", "), d.QueueID)
		if len(rcpts) > 0 {
			w.Message += ": " + d.Failed[rcpts[0]]
		}
	case tickets.EventMailQuarantined:
		w.Account = d.Account
		w.Message = fmt.Sprintf("mail from %s %q quarantined after failing ingest (uid %d): %s", d.From, d.Subject, d.UID, d.Reason)
	case tickets.EventSenderRateLimited:
		sender := d.Sender
		if sender == "" {
			sender = str("sender")
		}
		w.Message = fmt.Sprintf("%s sent more than %d mails in the rate window: the rest are kept out of tickets as a probable mail loop", sender, d.Limit)
	}
	return w
}

// entryTime is the time in a stream entry id ("1732540000000-0").
func entryTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}
