package tickets

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/mailparse"
)

// The ingest script (ingest.lua) and what Go hands it: its keys, named by
// keys.go, and one JSON argument whose fields it reads by name.

//go:embed ingest.lua
var ingestLua string

var ingestScript = redis.NewScript(ingestLua)

// Threading rules, as recorded in a comment's threaded_by.
const (
	ruleInReplyTo    = "in-reply-to"
	ruleReferences   = "references"
	ruleSubjectToken = "subject-token"
)

// ingestArgs is the script's first argument, decoded once at its top; the
// script's header says what each field is for.
type ingestArgs struct {
	Sender           string       `json:"sender"`
	MessageID        string       `json:"message_id"`
	Now              string       `json:"now"`
	Participants     []string     `json:"participants"`
	SuppressTriggers string       `json:"suppress_triggers"`
	SubjectTicket    string       `json:"subject_ticket"`
	Refs             []string     `json:"refs"`
	Tickets          []string     `json:"tickets"`
	NextID           int64        `json:"next_id"`
	Spare            int          `json:"spare"`
	Noise            string       `json:"noise"`
	NoiseEvent       EventType    `json:"noise_event"`
	Rate             ingestRate   `json:"rate"`
	StreamMaxLen     int64        `json:"stream_max_len"`
	Events           ingestEvents `json:"events"`
	SubjectRule      string       `json:"subject_rule"`
}

// ingestRate is the sender rate limit; Limit 0 means none applies.
type ingestRate struct {
	Limit    int    `json:"limit"`
	WindowMS int64  `json:"window_ms"`
	Reason   string `json:"reason"`
}

// ingestEvents are the event types the script may publish besides the
// noise event, which Go decides.
type ingestEvents struct {
	Created     EventType `json:"created"`
	Comment     EventType `json:"comment"`
	Suppressed  EventType `json:"suppressed"`
	RateLimited EventType `json:"rate_limited"`
}

// newIngestArgs says what the script needs to know of mail m, received at
// now: noise is its classify reason, refs the Message-IDs it answers, in
// threading order, and kinds the rule of each (none for a bounce's).
func (s *Store) newIngestArgs(m *mailparse.Parsed, src Source, support map[string]bool, noise string, refs, kinds []string, now time.Time) ingestArgs {
	a := ingestArgs{
		Sender: m.From.Email, MessageID: m.MessageID, Now: now.Format(time.RFC3339Nano),
		Participants: participants(m, support), SuppressTriggers: strconv.FormatBool(src.SuppressTriggers),
		SubjectTicket: subjectToken(m.Subject), Refs: make([]string, len(refs)), Noise: noise,
		Rate: ingestRate{Reason: NoiseRateLimited}, StreamMaxLen: s.opts.StreamMaxLen, SubjectRule: ruleSubjectToken,
		Events: ingestEvents{Created: EventTicketCreated, Comment: EventTicketComment,
			Suppressed: EventMailSuppressed, RateLimited: EventSenderRateLimited},
	}
	for i := range refs {
		a.Refs[i] = ruleReferences
		if i < len(kinds) {
			a.Refs[i] = kinds[i]
		}
	}
	switch noise {
	case "":
	case NoiseBounce:
		a.NoiseEvent = EventMailBounced
	default:
		a.NoiseEvent = EventMailSuppressed
	}
	// The initial import is old mail, not a loop happening now.
	if !src.SuppressTriggers && a.Sender != "" {
		a.Rate.Limit, a.Rate.WindowMS = s.opts.SenderRateLimit, s.opts.SenderRateWindow.Milliseconds()
	}
	return a
}

// errStale is the script's answer when a ticket it needs was not declared
// in its keys: another ingest changed things since the look.
var errStale = errors.New("ingest: stale look")

// maxIngestAttempts bounds the tries of one ingest. Each stale answer
// means another process made progress (a ticket created, a reference
// registered), so this is only reached under a storm of them.
const maxIngestAttempts = 50

// ingestTurns is how many ingest scripts of one store may be in flight at
// once. Redis runs scripts one after the other; a few in flight keep it
// busy while the next mails travel.
const ingestTurns = 4

// spareIDs is how many new ids an ingest declares, from the next one as
// this store knows it: one for each script of this store that may run
// first, and two for other processes. Each costs three short keys.
const spareIDs = ingestTurns + 2

// runIngest runs the ingest script with keys (ingestKeys) and the keys of
// the tickets it may touch, as look found them, and looks again when the
// script answers that one it needs was not given.
func (s *Store) runIngest(ctx context.Context, a *ingestArgs, keys, refs []string, look *redis.SliceCmd, tjson, cjson []byte) (Result, error) {
	select {
	case s.turns <- struct{}{}:
		defer func() { <-s.turns }()
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	fixed := len(keys)
	for attempt := 1; ; attempt++ {
		keys = keys[:fixed]
		a.Tickets = existingTickets(look, a.SubjectTicket)
		for _, id := range a.Tickets {
			tk := s.ticketKeys(id)
			keys = append(keys, tk.hash, tk.comments, tk.people, tk.threaded)
		}
		if a.Noise == "" {
			a.NextID, a.Spare = max(nextID(look), s.nextID.Load()), spareIDs
		}
		for id := a.NextID; id < a.NextID+int64(a.Spare); id++ {
			tk := s.ticketKeys(strconv.FormatInt(id, 10))
			keys = append(keys, tk.hash, tk.comments, tk.people)
		}
		args, err := json.Marshal(a)
		if err != nil {
			return Result{}, err
		}
		// Run sends EVALSHA, and EVAL when the server lost its script
		// cache (restart, failover).
		res := ingestScript.Run(ctx, s.rdb, keys, args, tjson, cjson)
		if res.Err() != nil {
			return Result{}, res.Err()
		}
		r, err := parseResult(res)
		if !errors.Is(err, errStale) {
			for next := r.Ticket + 1; r.Created; {
				cur := s.nextID.Load()
				if next <= cur || s.nextID.CompareAndSwap(cur, next) {
					break
				}
			}
			return r, err
		}
		if attempt == maxIngestAttempts {
			return Result{}, fmt.Errorf("tickets kept changing under it, %d tries", attempt)
		}
		if look = s.lookUp(ctx, s.rdb, refs); look.Err() != nil {
			return Result{}, look.Err()
		}
	}
}

// ingestKeys are the script's fixed keys and one msg:<ref> per reference,
// in the order ingest.lua's header gives; the ticket keys follow.
func (s *Store) ingestKeys(messageID, dedupe, sender string, rate ingestRate, refs []string) []string {
	keys := []string{s.seqKey(), s.ticketsKey(), s.eventsKey(), s.seenKey(dedupe), s.unusedKey(), s.unusedKey()}
	if messageID != "" {
		keys[4] = s.msgKey(messageID)
	}
	if rate.Limit > 0 {
		keys[5] = s.rateKey(sender)
	}
	for _, r := range refs {
		keys = append(keys, s.msgKey(r))
	}
	return keys
}

// lookUp reads what the script's ticket keys depend on: the last ticket id
// and the ticket each reference names.
func (s *Store) lookUp(ctx context.Context, c redis.Cmdable, refs []string) *redis.SliceCmd {
	keys := []string{s.seqKey()}
	for _, r := range refs {
		keys = append(keys, s.msgKey(r))
	}
	return c.MGet(ctx, keys...)
}

// existingTickets are the ids of the tickets the references named when
// looked up, and the subject token's: the script may add to them. nil
// look (noise): none.
func existingTickets(look *redis.SliceCmd, subjectTicket string) []string {
	out := []string{}
	if look == nil {
		return out
	}
	vals := look.Val()
	for i, v := range vals {
		if id, _ := v.(string); i > 0 && id != "" && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	if subjectTicket != "" && !slices.Contains(out, subjectTicket) {
		out = append(out, subjectTicket)
	}
	return out
}

// nextID is the id after the last one when looked up.
func nextID(look *redis.SliceCmd) int64 {
	if look == nil || len(look.Val()) == 0 {
		return 1
	}
	last, _ := look.Val()[0].(string)
	n, _ := strconv.ParseInt(last, 10, 64)
	return n + 1
}
