package tickets

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"strings"

	gojson "github.com/goccy/go-json"
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
	// ruleGmailThread joins the ticket of the Gmail conversation
	// (X-GM-THRID) the mail is in; tried after the header rules and before
	// the subject token, with the same scoping as the header rules.
	ruleGmailThread = "gmail-thread"
)

// batchArgs is the script's first argument, decoded once at its top; the
// script's header says what each field is for.
type batchArgs struct {
	Now          string       `json:"now"`
	IDs          []string     `json:"ids"`
	StreamMaxLen int64        `json:"stream_max_len"`
	Events       ingestEvents `json:"events"`
	SubjectRule  string       `json:"subject_rule"`
	TokenAnyone  bool         `json:"token_anyone"`
	Related      string       `json:"related_reason"`
	GmailRule    string       `json:"gmail_rule"`
	RateReason   string       `json:"rate_reason"`
	Unthreaded   string       `json:"unthreaded"`
	Mails        []*mailArgs  `json:"mails"`
}

// mailArgs is what the script needs to know of one mail of the batch.
type mailArgs struct {
	K                int        `json:"k"`
	Sender           string     `json:"sender"`
	MessageID        string     `json:"message_id"`
	Participants     []string   `json:"participants"`
	SenderSupport    bool       `json:"sender_support"`
	SuppressTriggers string     `json:"suppress_triggers"`
	SubjectTicket    string     `json:"subject_ticket"`
	Refs             []string   `json:"refs"`
	GmailThread      bool       `json:"gmail_thread"`
	Noise            string     `json:"noise"`
	NoiseEvent       EventType  `json:"noise_event"`
	Rate             ingestRate `json:"rate"`
	// Agent: an agent's mail from the Sent folder (Source.Agent); its
	// participants are its recipients, and it only joins a ticket.
	Agent bool `json:"agent"`
}

// ingestRate is the sender rate limit; Limit 0 means none applies.
type ingestRate struct {
	Limit    int   `json:"limit"`
	WindowMS int64 `json:"window_ms"`
}

// ingestEvents are the event types the script may publish besides the
// noise event, which Go decides.
type ingestEvents struct {
	Created     EventType `json:"created"`
	Comment     EventType `json:"comment"`
	Suppressed  EventType `json:"suppressed"`
	RateLimited EventType `json:"rate_limited"`
}

// newMailArgs says what the script needs to know of mail m: noise is its
// classify reason, refs the Message-IDs it answers, in threading order,
// and kinds the rule of each (none for a bounce's).
func (s *Store) newMailArgs(m *mailparse.Parsed, src Source, support map[string]bool, noise string, refs, kinds []string) *mailArgs {
	a := &mailArgs{
		Sender: m.From.Email, SenderSupport: support[m.From.Email], MessageID: m.MessageID,
		Participants: participants(m, support), SuppressTriggers: strconv.FormatBool(src.SuppressTriggers),
		SubjectTicket: subjectToken(m.Subject), Refs: make([]string, len(refs)), Noise: noise,
	}
	if src.Agent {
		// Header threading asks whether one of its recipients takes part
		// in the ticket; the subject token is not an agent's way in.
		a.Agent, a.SubjectTicket = true, ""
		a.Participants = recipients(m, support)
		a.SuppressTriggers = "true"
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
	if !src.SuppressTriggers && !src.Agent && a.Sender != "" {
		a.Rate.Limit, a.Rate.WindowMS = s.opts.SenderRateLimit, s.opts.SenderRateWindow.Milliseconds()
	}
	return a
}

// maxIngestAttempts bounds the tries of one ingest in a row that store
// nothing. Each stale answer means another process made progress (a
// ticket created, a reference registered), so this is only reached under
// a storm of them.
const maxIngestAttempts = 50

// ingestTurns is how many ingest scripts of one store may be in flight at
// once. Redis runs scripts one after the other; a few in flight keep it
// busy while the next mails travel.
const ingestTurns = 4

// spareIDs is how many new ids a batch declares beyond those this
// store's batches in flight may take: for tickets other processes open
// between the look and the script. Each costs four short keys.
const spareIDs = 2

// runScript runs the ingest script once on the mails of todo, with the
// keys of the tickets look found, and returns the results of the mails it
// ingested, in order: all of them, or those before the first that needed
// a ticket's keys that were not given (stale: Go looks again and runs the
// rest). before, unless nil, queues writes sent in the same round trip,
// ahead of the script: Redis then runs (and with appendfsync always,
// syncs) them with it at once.
func (s *Store) runScript(ctx context.Context, todo []*pending, look lookResult, now string, before func(redis.Pipeliner)) ([]Result, bool, error) {
	select {
	case s.turns <- struct{}{}:
		defer func() { <-s.turns }()
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	a := batchArgs{
		Now: now, StreamMaxLen: s.opts.StreamMaxLen, SubjectRule: ruleSubjectToken, GmailRule: ruleGmailThread,
		RateReason: NoiseRateLimited, Unthreaded: SkipUnthreaded,
		TokenAnyone: s.opts.TokenThreadingAnyone, Related: RelatedSubjectTokenStranger,
		Events: ingestEvents{Created: EventTicketCreated, Comment: EventTicketComment,
			Suppressed: EventMailSuppressed, RateLimited: EventSenderRateLimited},
		Mails: make([]*mailArgs, len(todo)),
	}
	// The tickets that exist and that the mails may join, then the ids
	// the batch may create: from the next one as this store knows it, one
	// for each mail that may open a ticket in this batch and in the
	// batches of this store in flight, and a few for other processes.
	ids := map[string]bool{}
	opening := int64(0)
	for _, p := range todo {
		if p.args.Noise != "" {
			continue
		}
		if !p.args.Agent {
			opening++ // an agent's mail never opens a ticket
		}
		for _, k := range p.lookKeys(s) {
			if id := look.refs[k]; id != "" && !ids[id] {
				ids[id] = true
				a.IDs = append(a.IDs, id)
			}
		}
		if id := p.args.SubjectTicket; id != "" && !ids[id] {
			ids[id] = true
			a.IDs = append(a.IDs, id)
		}
	}
	if opening > 0 {
		inFlight := s.opening.Add(opening)
		defer s.opening.Add(-opening)
		first := max(look.next, s.nextID.Load())
		for n := first; n < first+inFlight+spareIDs; n++ {
			if id := strconv.FormatInt(n, 10); !ids[id] {
				ids[id] = true
				a.IDs = append(a.IDs, id)
			}
		}
	}
	if a.IDs == nil {
		a.IDs = []string{}
	}
	keys := make([]string, 0, 3+4*len(a.IDs)+5*len(todo))
	keys = append(keys, s.seqKey(), s.ticketsKey(), s.eventsKey())
	for _, id := range a.IDs {
		tk := s.ticketKeys(id)
		keys = append(keys, tk.hash, tk.comments, tk.people, tk.threaded)
	}
	argv := make([]any, 1, 1+3*len(todo))
	for i, p := range todo {
		p.args.K = len(keys)
		keys = append(keys, s.seenKey(p.dedupe), s.unusedKey(), s.unusedKey())
		if p.m.MessageID != "" {
			keys[p.args.K+1] = s.msgKey(p.m.MessageID)
		}
		if p.args.Rate.Limit > 0 {
			keys[p.args.K+2] = s.rateKey(p.args.Sender)
		}
		keys = append(keys, p.lookKeys(s)...)
		a.Mails[i] = p.args
		argv = append(argv, p.tjson, p.chead, p.cbody)
	}
	var err error
	if argv[0], err = gojson.Marshal(&a); err != nil {
		return nil, false, err
	}
	// Run sends EVALSHA, and EVAL when the server lost its script cache
	// (restart, failover).
	var cmd *redis.Cmd
	if before == nil {
		cmd = ingestScript.Run(ctx, s.rdb, keys, argv...)
	} else {
		cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			before(p)
			cmd = ingestScript.EvalSha(ctx, p, keys, argv...)
			return nil
		})
		for _, c := range cmds[:len(cmds)-1] {
			// A write refused before the script: its mails are failed
			// and fetched again, which writes it again.
			if c.Err() != nil {
				return nil, false, c.Err()
			}
		}
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			cmd = ingestScript.Run(ctx, s.rdb, keys, argv...)
		}
	}
	replies, err := cmd.Slice()
	if err != nil {
		return nil, false, err
	}
	out := make([]Result, 0, len(replies))
	for _, reply := range replies {
		r, stale, err := parseResult(reply)
		if err != nil {
			return out, false, err
		}
		if stale {
			return out, true, nil
		}
		for next := r.Ticket + 1; r.Created; {
			cur := s.nextID.Load()
			if next <= cur || s.nextID.CompareAndSwap(cur, next) {
				break
			}
		}
		out = append(out, r)
	}
	return out, false, nil
}

// parseResult reads the script's reply for one mail; stale is true when
// that mail was not tried.
func parseResult(reply any) (r Result, stale bool, err error) {
	vals, _ := reply.([]any)
	str := func(i int) string {
		if i < len(vals) {
			s, _ := vals[i].(string)
			return s
		}
		return ""
	}
	if len(vals) == 1 && str(0) == "stale" {
		return Result{}, true, nil
	}
	if len(vals) < 2 {
		return Result{}, false, fmt.Errorf("ingest: unexpected script reply %v", reply)
	}
	tid, cidx, _ := strings.Cut(str(1), ":")
	r.Ticket, _ = strconv.ParseInt(tid, 10, 64)
	r.Comment, _ = strconv.ParseInt(cidx, 10, 64)
	r.ThreadedBy, r.EventID = str(2), str(3)
	r.RelatedTicket, _ = strconv.ParseInt(str(4), 10, 64)
	r.RelatedReason = str(5)
	switch str(0) {
	case "duplicate":
		r.Duplicate = true
	case string(EventTicketCreated):
		r.Created = true
	case "suppressed":
		r.Suppressed, r.ThreadedBy = r.ThreadedBy, ""
	case "skipped":
		r.Skipped, r.ThreadedBy = r.ThreadedBy, ""
	}
	return r, false, nil
}

// lookResult is what the script's ticket keys depend on, as looked up:
// the id after the last ticket's, and the ticket each key of lookKeys
// names, by key.
type lookResult struct {
	next int64
	refs map[string]string
}

// lookKeys are the keys naming the tickets the mail may join: those of its
// references, then its Gmail conversation's.
func (p *pending) lookKeys(s *Store) []string {
	keys := make([]string, 0, len(p.refs)+1)
	for _, r := range p.refs {
		keys = append(keys, s.msgKey(r))
	}
	if p.args.GmailThread {
		keys = append(keys, p.gmThread)
	}
	return keys
}

// lookUp queues the look-up of the references of mails in c (a client or a
// pipeline); read its answer with readLook once c ran.
func (s *Store) lookUp(ctx context.Context, c redis.Cmdable, mails []*pending) (*redis.SliceCmd, []string) {
	keys := []string{s.seqKey()}
	seen := map[string]bool{}
	for _, p := range mails {
		if p.args.Noise != "" {
			// Noise touches no ticket: nothing to look up.
			continue
		}
		for _, k := range p.lookKeys(s) {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	return c.MGet(ctx, keys...), keys[1:]
}

func readLook(cmd *redis.SliceCmd, refs []string) lookResult {
	l := lookResult{next: 1, refs: make(map[string]string, len(refs))}
	vals := cmd.Val()
	if len(vals) != len(refs)+1 {
		return l
	}
	last, _ := vals[0].(string)
	n, _ := strconv.ParseInt(last, 10, 64)
	l.next = n + 1
	for i, r := range refs {
		if id, _ := vals[i+1].(string); id != "" {
			l.refs[r] = id
		}
	}
	return l
}
