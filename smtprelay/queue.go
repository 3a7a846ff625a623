package smtprelay

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/rkey"
)

// QueueOptions configure a Queue.
type QueueOptions struct {
	Prefix string
	Now    func() time.Time
	// WaitAOF makes Put wait until Redis has fsynced the message to its
	// append-only file (WAITAOF, Redis ≥ 7.2 with appendonly yes).
	WaitAOF bool
	// ClaimIdle is how long a message may stay with a worker before
	// another reclaims it (the first one is presumed dead).
	ClaimIdle time.Duration
	// AcceptTimeout bounds the store of one message by the SMTP side,
	// from the end of DATA to the 250 (default 10s). Past it the client
	// gets 451, and the copy stored meanwhile is never delivered.
	AcceptTimeout time.Duration
}

// Queue is the relay's durable queue in Redis: a hash per message, a
// stream (consumer group "delivery") of messages ready to go, a sorted
// set of deferred messages by next attempt time, one of tentative
// messages (stored, not yet answered 250) by the end of their accept
// time, and an index of every message not finished.
type Queue struct {
	rdb  redis.UniversalClient
	opts QueueOptions
	p    string

	mu   sync.Mutex
	held map[string]heldEntry // by queue id, what this process's workers hold
	// clean: consumers whose own pending entries Next found empty, since
	// when each was handed only what it released (see mayOwn).
	clean     map[string]bool
	lastClaim time.Time    // Next's last look for other consumers' stale entries
	clock     clockReading // the latest reading of Redis's clock (Accept)
	seen      depthSeen    // the queue's depth at the last Health that found it whole
	// gone counts the tries of this process whose record had vanished
	// when they saved their outcome, since the last Health that found the
	// queue whole: an admin's delete, or Redis losing the queue.
	gone int

	beforeConfirm func() // tests: runs just before Confirm's round trip
}

// group is the ready stream's consumer group: the delivery workers share
// it, and the queue's scripts get its name from here (ARGV).
const group = "delivery"

// NewQueue returns the queue on rdb.
func NewQueue(rdb redis.UniversalClient, opts QueueOptions) *Queue {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ClaimIdle <= 0 {
		opts.ClaimIdle = 10 * time.Minute
	}
	if opts.AcceptTimeout <= 0 {
		opts.AcceptTimeout = 10 * time.Second
	}
	return &Queue{rdb: rdb, opts: opts, p: rkey.Prefix(rdb, opts.Prefix), held: map[string]heldEntry{}, clean: map[string]bool{}}
}

func (q *Queue) msgKey(id string) string { return q.p + "relay:msg:" + id }
func (q *Queue) ready() string           { return q.p + "relay:ready" }
func (q *Queue) deferred() string        { return q.p + "relay:deferred" }
func (q *Queue) tentative() string       { return q.p + "relay:tentative" }
func (q *Queue) index() string           { return q.p + "relay:messages" }

// AcceptTimeout is how long the SMTP side may take to store a message
// before it answers 451.
func (q *Queue) AcceptTimeout() time.Duration { return q.opts.AcceptTimeout }

// newID returns a short, time-ordered queue id such as "lq3x8k2a7f9c1e".
func newID(now time.Time) string {
	n, _ := rand.Int(rand.Reader, big.NewInt(36*36*36*36*36*36))
	r := strconv.FormatInt(n.Int64(), 36)
	return strconv.FormatInt(now.UnixMilli(), 36) + strings.Repeat("0", 6-len(r)) + r
}

// stamp gives a new message its id, state, time, size and pending
// recipients.
func (q *Queue) stamp(m *Message, state string) time.Time {
	now := q.opts.Now().UTC()
	if m.ID == "" {
		m.ID = newID(now)
	}
	m.State, m.CreatedAt, m.Size, m.rev = state, now, len(m.Data), 1
	m.initRcpts()
	return now
}

// Put stores a new message and makes it ready for delivery, in one MULTI.
// The relay queues its own bounces so; mail from an SMTP client goes
// through PutTentative and Confirm instead.
func (q *Queue) Put(ctx context.Context, m *Message) error {
	now := q.stamp(m, StateQueued)
	meta, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, q.msgKey(m.ID), "meta", meta, "data", m.Data, "rev", m.rev)
		p.ZAdd(ctx, q.index(), redis.Z{Score: float64(now.UnixMilli()), Member: m.ID})
		p.XAdd(ctx, &redis.XAddArgs{Stream: q.ready(), Values: []any{"id", m.ID}})
		return nil
	})
	if err == nil && q.opts.WaitAOF {
		err = q.waitAOF(ctx)
	}
	if err != nil {
		return fmt.Errorf("queue %s: %w", m.ID, err)
	}
	return nil
}

// waitAOF blocks until the local Redis has fsynced every write so far
// (WAITAOF numlocal=1 numreplicas=0).
func (q *Queue) waitAOF(ctx context.Context) error {
	res, err := q.rdb.Do(ctx, "WAITAOF", 1, 0, 1000).Slice()
	if err != nil {
		return fmt.Errorf("WAITAOF: %w", err)
	}
	if len(res) < 1 || res[0] != int64(1) {
		return errors.New("WAITAOF: not fsynced within 1s")
	}
	return nil
}

// Next returns up to n messages for consumer to deliver: first those it
// holds from before (its own pending entries), then those another
// consumer took more than ClaimIdle ago and never finished (it is
// presumed dead: XAUTOCLAIM), then new ones, waiting up to block.
//
// Each of those reads is a round trip, and under appendfsync always every
// round trip waits for Redis's next fsync; so a consumer's own entries are
// read only when it may have some (at its first call, after a try that
// left its entry pending, after Reclaim gave it a dead worker's), and
// other consumers' stale entries are looked for at most every claimEvery.
// In steady flow a message costs one read of the stream and one of its
// record.
//
// It is the one place that reads the queue, so it is where a queue that
// Redis lost (restarted empty, flushed, failed over to a replica without
// it) is made again: the error is then a *LostError saying what was lost,
// and the next call reads the new queue.
func (q *Queue) Next(ctx context.Context, consumer string, n int, block time.Duration) ([]*Message, error) {
	var entries []redis.XMessage
	if q.mayOwn(consumer) {
		own, err := q.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: group, Consumer: consumer, Streams: []string{q.ready(), "0"}, Count: int64(n),
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, q.readErr(ctx, err)
		}
		for _, s := range own {
			entries = append(entries, s.Messages...)
		}
		if len(entries) == 0 {
			q.mu.Lock()
			q.clean[consumer] = true
			q.mu.Unlock()
		}
	}
	if len(entries) == 0 && q.claimDue() {
		claimed, _, err := q.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: q.ready(), Group: group, Consumer: consumer, MinIdle: q.opts.ClaimIdle, Start: "0-0", Count: int64(n),
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, q.readErr(ctx, err)
		}
		entries = claimed
	}
	if len(entries) == 0 {
		res, err := q.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: group, Consumer: consumer, Streams: []string{q.ready(), ">"}, Count: int64(n), Block: block,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, q.readErr(ctx, err)
		}
		for _, s := range res {
			entries = append(entries, s.Messages...)
		}
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i], _ = e.Values["id"].(string)
	}
	msgs, errs := q.getMany(ctx, ids, true)
	var out []*Message
	for i, e := range entries {
		m, err := msgs[i], errs[i]
		if errors.Is(err, ErrNotFound) || err == nil && m.State == StateTentative {
			// Deleted by an admin while queued, or (never the case
			// unless a record was edited by hand) not confirmed: nothing
			// to deliver.
			q.ack(ctx, e.ID)
			continue
		}
		if err != nil {
			// The entries not handed out stay pending: read them again.
			q.dirty(consumer)
			return out, err
		}
		m.entry, m.consumer = e.ID, consumer
		q.hold(m)
		out = append(out, m)
	}
	return out, nil
}

// claimEvery is how often, at most, Next looks for entries that other
// consumers have held longer than ClaimIdle.
func (q *Queue) claimEvery() time.Duration { return min(time.Second, q.opts.ClaimIdle/2) }

// claimDue says whether it is time to look for stale entries again, and
// if so counts this as the look.
func (q *Queue) claimDue() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.lastClaim.IsZero() && time.Since(q.lastClaim) < q.claimEvery() {
		return false
	}
	q.lastClaim = time.Now()
	return true
}

// mayOwn says whether consumer may have pending entries of its own: it
// never read them in this process, or something it took is still held
// (its try left the entry pending), or it was given others' (Reclaim).
func (q *Queue) mayOwn(consumer string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.clean[consumer] {
		return true
	}
	for _, h := range q.held {
		if h.consumer == consumer {
			return true
		}
	}
	return false
}

// dirty makes the next Next of consumer read its own pending entries.
func (q *Queue) dirty(consumer string) {
	q.mu.Lock()
	delete(q.clean, consumer)
	q.mu.Unlock()
}

// ack forgets a stream entry nobody needs to deliver.
func (q *Queue) ack(ctx context.Context, entry string) {
	q.rdb.XAck(ctx, q.ready(), group, entry)
	q.rdb.XDel(ctx, q.ready(), entry)
}

// hold and release track what this process's workers hold, so that a
// queue lost meanwhile can say how many tries were under way.
func (q *Queue) hold(m *Message) {
	q.mu.Lock()
	q.held[m.ID] = heldEntry{entry: m.entry, consumer: m.consumer}
	q.mu.Unlock()
}

// heldEntry is a message a worker of this process took from the stream.
type heldEntry struct{ entry, consumer string }

func (q *Queue) release(id string) {
	q.mu.Lock()
	delete(q.held, id)
	q.mu.Unlock()
}

// ErrNotFound is returned for a queue id that does not exist.
var ErrNotFound = errors.New("no such queued message")

// Get loads a message; withData loads its raw bytes too.
func (q *Queue) Get(ctx context.Context, id string, withData bool) (*Message, error) {
	vals, err := q.rdb.HMGet(ctx, q.msgKey(id), recordFields(withData)...).Result()
	if err != nil {
		return nil, err
	}
	return q.decodeRecord(id, vals, withData)
}

// getMany loads messages in one round trip, with their bytes when
// withData (Get's flag): the i-th message or error is for ids[i].
func (q *Queue) getMany(ctx context.Context, ids []string, withData bool) ([]*Message, []error) {
	msgs, errs := make([]*Message, len(ids)), make([]error, len(ids))
	if len(ids) == 0 {
		return msgs, errs
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, q.msgKey(id), recordFields(withData)...)
		}
		return nil
	})
	for i, id := range ids {
		vals, cerr := cmds[i].Result()
		switch {
		case cerr != nil:
			errs[i] = cerr
		case err != nil:
			errs[i] = err
		default:
			msgs[i], errs[i] = q.decodeRecord(id, vals, withData)
		}
	}
	return msgs, errs
}

func recordFields(withData bool) []string {
	if withData {
		return []string{"meta", "rev", "data"}
	}
	return []string{"meta", "rev"}
}

// decodeRecord reads a message from the fields recordFields names.
func (q *Queue) decodeRecord(id string, vals []any, withData bool) (*Message, error) {
	meta, _ := vals[0].(string)
	if meta == "" {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	m, err := decodeMeta([]byte(meta))
	if err != nil {
		return nil, fmt.Errorf("queue %s: %w", id, err)
	}
	rev, _ := vals[1].(string)
	m.rev, _ = strconv.ParseInt(rev, 10, 64)
	if withData {
		d, _ := vals[2].(string)
		m.Data = []byte(d)
	}
	return m, nil
}

// beginScript marks a message as being tried, unless it was deleted, or
// its record changed since the worker read it (rev).
// KEYS: the message's hash. ARGV: meta JSON, rev.
// Returns 1 (marked), 0 (deleted) or 2 (the record is newer).
var beginScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'rev') or '0') >= tonumber(ARGV[2]) then return 2 end
redis.call('HSET', KEYS[1], 'meta', ARGV[1], 'rev', ARGV[2])
return 1`)

// ErrStale: the message's record was saved again after the worker read it
// (an outcome this process kept in memory, recorded by housekeeping in
// between), so the copy in hand may list as pending recipients that were
// delivered. It is not tried; if its stream entry is still pending, the
// worker reads it again with the record as it now is.
var ErrStale = errors.New("queued message changed since it was read")

// Begin records, before a try sends anything, that m is being tried and
// by whom (StateSending). A try that never records its outcome (its
// process killed between the peer's 250 and Defer or Finish) is so known
// to whoever takes the message over: its recipients may get it twice.
// ErrNotFound: an admin deleted it; do not send it.
func (q *Queue) Begin(ctx context.Context, m *Message) error {
	m.State, m.Consumer, m.TryStarted = StateSending, m.consumer, q.opts.Now().UTC()
	meta, err := json.Marshal(m)
	if err != nil {
		return err
	}
	n, err := beginScript.Run(ctx, q.rdb, []string{q.msgKey(m.ID)}, meta, m.rev+1).Int()
	if err != nil {
		return fmt.Errorf("queue %s: %w", m.ID, err)
	}
	switch n {
	case 0:
		q.ack(ctx, m.entry)
		q.release(m.ID)
		return fmt.Errorf("%w: %s", ErrNotFound, m.ID)
	case 2:
		return fmt.Errorf("%w: %s", ErrStale, m.ID)
	}
	m.rev++
	return nil
}

// saveScript records the outcome of a try in one step: the message's new
// metadata, the acknowledgement of the stream entry the worker held, and
// either its next attempt time (defer) or its final state (finish). It
// does nothing to a message an admin deleted meanwhile, so a worker
// finishing late cannot bring it back, nor to a record already newer
// than this outcome (rev): an outcome saved again after its first save's
// answer was lost changes nothing.
//
// A finish that bounces also counts the bounce here, in the same step,
// so that no crash between the two loses it; ZADD NX keeps the first
// time if the same finish is saved again.
//
// KEYS: the message's hash, the ready stream, the deferred set, the index,
// the bounced set.
// ARGV: meta JSON, the stream entry held ("" for none), "defer" or
// "finish", next attempt (ms) or how long to keep the record (ms), the
// queue id, the consumer group, rev, "1" when the finish is a bounce,
// now (ms), the time before which counted bounces are dropped (ms).
// Returns 1 (saved), 0 (deleted) or 2 (the record is newer).
var saveScript = redis.NewScript(`
if ARGV[2] ~= '' then
  -- pcall: a stream whose group Redis lost must not fail the record.
  redis.pcall('XACK', KEYS[2], ARGV[6], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'rev') or '0') >= tonumber(ARGV[7]) then return 2 end
redis.call('HSET', KEYS[1], 'meta', ARGV[1], 'rev', ARGV[7])
if ARGV[3] == 'defer' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
else
  redis.call('HDEL', KEYS[1], 'data')
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('ZREM', KEYS[4], ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  if ARGV[8] == '1' then
    redis.call('ZADD', KEYS[5], 'NX', ARGV[9], ARGV[5])
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[10])
  end
end
return 1`)

func (q *Queue) save(ctx context.Context, m *Message, mode string, arg int64) error {
	m.Consumer, m.TryStarted = "", time.Time{}
	meta, err := json.Marshal(m)
	if err != nil {
		return err
	}
	bounce, now := "0", q.opts.Now()
	if mode == "finish" && m.State == StateBounced {
		bounce = "1"
	}
	keys := []string{q.msgKey(m.ID), q.ready(), q.deferred(), q.index(), q.bounced()}
	n, err := saveScript.Run(ctx, q.rdb, keys, meta, m.entry, mode, arg, m.ID, group, m.rev+1,
		bounce, now.UnixMilli(), now.Add(-bouncedKeep).UnixMilli()).Int()
	if err != nil {
		return fmt.Errorf("queue %s: %w", m.ID, err)
	}
	m.entry = ""
	m.rev++
	q.mu.Lock()
	delete(q.held, m.ID)
	if n == 0 {
		q.gone++
	}
	q.mu.Unlock()
	return nil
}

// Finish records a message that reached a final state (sent or bounced).
// Its bytes are dropped; its record stays for `queue show` for keep
// (7 days when 0). A bounce is counted for BouncedSince in the same step.
func (q *Queue) Finish(ctx context.Context, m *Message, keep time.Duration) error {
	if keep <= 0 {
		keep = 7 * 24 * time.Hour
	}
	m.NextAttempt = time.Time{}
	return q.save(ctx, m, "finish", keep.Milliseconds())
}

// Defer schedules another try of m at m.NextAttempt.
func (q *Queue) Defer(ctx context.Context, m *Message) error {
	m.State = StateDeferred
	return q.save(ctx, m, "defer", m.NextAttempt.UnixMilli())
}
