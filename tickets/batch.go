package tickets

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/mailparse"
)

// BatchMail is one mail handed to IngestBatch.
type BatchMail struct {
	Raw    []byte
	Parsed *mailparse.Parsed // nil: IngestBatch parses Raw
	Source Source
}

// BatchResult is what IngestBatch did with one mail: its Result, or Err
// when that mail was not stored. When the store cannot be reached, every
// mail not yet stored gets that error.
type BatchResult struct {
	Result
	Err error
}

// A batch is cut into script calls of at most this many mails and bytes:
// Redis runs nothing else while a script runs, so one call is kept to a
// few milliseconds.
const (
	maxScriptMails = 200
	maxScriptBytes = 8 << 20
)

// IngestBatch ingests mails in order, each exactly once as Ingest does,
// and answers for each in the same order: mails later in the batch thread
// onto tickets opened earlier in it, and a mail given twice is a duplicate
// the second time. It costs two round trips for the whole batch (a look at
// the tickets the mails name, then the raw bytes and one script call that
// ingests them all), so with appendfsync always Redis writes and syncs the
// batch at once.
func (s *Store) IngestBatch(ctx context.Context, mails []BatchMail) []BatchResult {
	out := make([]BatchResult, len(mails))
	for start := 0; start < len(mails); {
		end, size := start, 0
		for end < len(mails) && end-start < maxScriptMails && (end == start || size+len(mails[end].Raw) <= maxScriptBytes) {
			size += len(mails[end].Raw)
			end++
		}
		if err := s.ingestBatch(ctx, mails[start:end], out[start:end]); err != nil {
			// The store is unreachable: the rest would fail the same way.
			for i := end; i < len(out); i++ {
				out[i].Err = err
			}
			break
		}
		start = end
	}
	return out
}

// afterLook, when set (by tests only), runs between a batch's look-up and
// its first script call: where another process may change what was seen.
var afterLook func()

// pending is one mail of a batch, ready for the script.
type pending struct {
	out    *BatchResult
	m      *mailparse.Parsed
	keep   []byte // the raw bytes kept, up to MaxRawBytes
	rawSHA string
	c      *Comment
	args   *mailArgs
	refs   []string
	dedupe string
	skip   string // why an agent's mail is left out before the script (Result.Skipped)
	// gmThread is the key of its Gmail conversation's ticket, or "".
	gmThread string
	tjson    []byte // the ticket it would open; none for noise and agents' mail
	chead    []byte // its comment's members but the body (commentMembers)
	cbody    []byte // and its body's
}

// ingestBatch ingests mails, answering in out, and returns the error of
// the store when it could not be reached: then every mail not stored has
// it.
func (s *Store) ingestBatch(ctx context.Context, mails []BatchMail, out []BatchResult) error {
	support, err := s.supportSet(ctx)
	if err != nil {
		for i := range out {
			out[i].Err = err
		}
		return err
	}
	now := s.opts.Now().UTC()
	todo := make([]*pending, 0, len(mails))
	for i, bm := range mails {
		p, err := s.prepare(bm, support, now)
		if err != nil {
			out[i].Err = err
			continue
		}
		p.out = &out[i]
		todo = append(todo, p)
	}
	if todo, err = s.skipOutbound(ctx, todo); err != nil {
		err = s.fail(ctx, err)
		for _, p := range todo {
			p.out.Err = fmt.Errorf("ingest %s: %w", describe(p.m, p.rawSHA), err)
		}
		return err
	}
	if len(todo) == 0 {
		return nil
	}

	// First round trip, a read: what the script's ticket keys depend on
	// (see ingest.lua). The second writes the raw mails and attachment
	// bytes (content-addressed, so writing them twice is harmless) and
	// runs the script after them: one write, and one fsync, per batch.
	look, refs := s.lookUp(ctx, s.rdb, todo)
	err = look.Err()
	if err == nil && afterLook != nil {
		afterLook()
	}
	stamp := now.Format(time.RFC3339Nano)
	writeBytes := func(pipe redis.Pipeliner) {
		for _, p := range todo {
			pipe.SetNX(ctx, s.Key(rawRef(p.rawSHA)), p.keep, 0)
			for i, part := range p.m.Parts {
				pipe.SetNX(ctx, s.Key(blobRef(p.c.Attachments[i].SHA256)), part.Data, 0)
			}
		}
	}
	for attempt := 1; err == nil && len(todo) > 0; attempt++ {
		var done []Result
		var stale bool
		done, stale, err = s.runScript(ctx, todo, readLook(look, refs), stamp, writeBytes)
		writeBytes = nil
		for i, r := range done {
			todo[i].out.Result = r
		}
		if err != nil || !stale {
			todo = todo[len(done):]
			break
		}
		if todo = todo[len(done):]; len(done) > 0 {
			attempt = 0
		}
		if attempt == maxIngestAttempts {
			err = fmt.Errorf("tickets kept changing under it, %d tries", attempt)
			break
		}
		look, refs = s.lookUp(ctx, s.rdb, todo)
		err = look.Err()
	}
	if err == nil {
		return nil
	}
	err = s.fail(ctx, err)
	for _, p := range todo {
		p.out.Err = fmt.Errorf("ingest %s: %w", describe(p.m, p.rawSHA), err)
	}
	return err
}

// prepare builds what the script stores of one mail, received at now.
func (s *Store) prepare(bm BatchMail, support map[string]bool, now time.Time) (*pending, error) {
	raw, m := bm.Raw, bm.Parsed
	if m == nil {
		m = mailparse.Parse(raw)
	}
	received := bm.Source.ReceivedAt
	if received.IsZero() {
		received = now
	}
	p := &pending{m: m, keep: raw, rawSHA: sha256Hex(raw)}
	if s.opts.MaxRawBytes > 0 && int64(len(raw)) > s.opts.MaxRawBytes {
		p.keep = raw[:s.opts.MaxRawBytes]
	}
	p.c = newComment(m, raw, p.rawSHA, len(p.keep) < len(raw), received)
	p.dedupe = dedupeKey(m, bm.Source, p.rawSHA)

	noise := classify(m, support)
	if bm.Source.Agent {
		// An agent's mail is from a support address by nature; only an
		// automatic one is left out.
		if noise != "" && noise != NoiseOwnAddress {
			return &pending{m: m, skip: SkipAutomatic}, nil
		}
		noise = ""
		p.c.Role = RoleAgent
	}
	var kinds []string
	if noise == NoiseBounce {
		p.refs = limitRefs(bounceRefs(m))
	} else {
		p.refs, kinds = threadRefs(m)
	}
	var err error
	if noise == "" && !bm.Source.Agent {
		if p.tjson, err = jsonTail(newTicket(m, bm.Source, support, now)); err != nil {
			return nil, err
		}
	}
	if p.chead, p.cbody, err = commentMembers(p.c); err != nil {
		return nil, err
	}
	p.args = s.newMailArgs(m, bm.Source, support, noise, p.refs, kinds)
	if noise == "" && bm.Source.GmailThreadID != 0 {
		p.gmThread = s.gmThreadKey(bm.Source.Origin, bm.Source.GmailThreadID)
		p.args.GmailThread = true
	}
	return p, nil
}

// skipOutbound answers the agents' mails (Source.Agent) that are skipped,
// and returns the rest of todo: those prepare left out, and those whose
// Message-ID mailgate registered as its own (RegisterSent, or
// RegisterOutbound for a notification), which the helpdesk has already.
// A mail ingested before is not looked at here: the script calls it a
// duplicate. One round trip, only for a batch with agents' mail.
func (s *Store) skipOutbound(ctx context.Context, todo []*pending) ([]*pending, error) {
	var keys []string
	var asked []*pending
	for _, p := range todo {
		if p.skip == "" && p.args.Agent && p.m.MessageID != "" {
			keys = append(keys, s.outboundKey(p.m.MessageID), s.msgKey(p.m.MessageID), s.seenKey(p.dedupe))
			asked = append(asked, p)
		}
	}
	outbound := map[*pending]bool{}
	if len(keys) > 0 {
		vals, err := s.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return todo, err
		}
		for i, p := range asked {
			out, msg, seen := vals[3*i], vals[3*i+1], vals[3*i+2]
			outbound[p] = seen == nil && (out != nil || msg != nil)
		}
	}
	rest := todo[:0:0]
	for _, p := range todo {
		switch {
		case p.skip != "":
			p.out.Skipped = p.skip
		case outbound[p]:
			p.out.Skipped = SkipOutbound
		default:
			rest = append(rest, p)
		}
	}
	return rest, nil
}
