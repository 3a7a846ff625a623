package tickets

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/mailparse"
)

// Quarantined is a mail set aside after failing ingest too many times. Its
// raw bytes are kept whole (no size cap) so an admin can look at it and
// feed it again with `mailgate tickets ingest`.
type Quarantined struct {
	ID      string `json:"id"` // sha256 of the raw bytes
	Account string `json:"account"`
	UID     uint32 `json:"uid,omitempty"`
	Reason  string `json:"reason"`
	At      string `json:"at"`  // RFC 3339
	Raw     string `json:"raw"` // key name, "raw:<sha256>"
	Size    int    `json:"size"`
	Subject string `json:"subject,omitempty"`
	From    string `json:"from,omitempty"`
}

// Quarantine stores a mail that could not be ingested, with the reason,
// and publishes a mail.quarantined event.
func (s *Store) Quarantine(ctx context.Context, raw []byte, account string, uid uint32, reason string) error {
	sha := sha256Hex(raw)
	// Subject and From are best effort: the mail failed ingest, maybe
	// because it does not parse, and Parse never fails nor panics.
	m := mailparse.Parse(raw)
	q := Quarantined{ID: sha, Account: account, UID: uid, Reason: reason, At: s.opts.Now().UTC().Format(time.RFC3339),
		Raw: rawRef(sha), Size: len(raw), Subject: m.Subject, From: m.From.Email}
	data, err := json.Marshal(q)
	if err != nil {
		return err
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SetNX(ctx, s.Key(q.Raw), raw, 0)
		p.HSet(ctx, s.quarantineKey(), sha, data)
		p.XAdd(ctx, s.eventArgs("type", string(EventMailQuarantined), "ticket", "0", "reason", reason, "suppress_triggers", "true",
			"message_id", "", "data", string(data)))
		return nil
	})
	if err != nil {
		return s.fail(ctx, fmt.Errorf("quarantine %s uid %d: %w", account, uid, err))
	}
	return nil
}

// QuarantineList returns every quarantined mail.
func (s *Store) QuarantineList(ctx context.Context) ([]Quarantined, error) {
	all, err := s.rdb.HGetAll(ctx, s.quarantineKey()).Result()
	if err != nil {
		return nil, s.fail(ctx, fmt.Errorf("list quarantine: %w", err))
	}
	out := make([]Quarantined, 0, len(all))
	for _, v := range all {
		var q Quarantined
		if err := json.Unmarshal([]byte(v), &q); err == nil {
			out = append(out, q)
		}
	}
	return out, nil
}
