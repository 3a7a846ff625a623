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
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/rkey"
)

// Message states.
const (
	StateQueued   = "queued"   // waiting for a delivery worker
	StateDeferred = "deferred" // a try failed temporarily; NextAttempt says when again
	StateSent     = "sent"     // delivered to every recipient
	StateBounced  = "bounced"  // failed permanently or expired; a DSN went to the sender
)

// Message is one accepted mail and its delivery state. Data (the raw
// RFC 5322 bytes) is loaded only when delivering or showing it.
type Message struct {
	ID          string    `json:"id"`
	From        string    `json:"from"` // envelope sender; "" for a bounce
	To          []string  `json:"to"`   // recipients not yet delivered
	Done        []string  `json:"done,omitempty"`
	Size        int       `json:"size"`
	Account     string    `json:"account,omitempty"` // the connected Gmail account it is from, if any
	Ticket      int64     `json:"ticket,omitempty"`
	MessageID   string    `json:"message_id,omitempty"`
	State       string    `json:"state"`
	Route       Route     `json:"route,omitempty"` // route of the last try: gmail, direct, smarthost, deferred
	Attempts    int       `json:"attempts"`
	CreatedAt   time.Time `json:"created_at"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Data        []byte    `json:"-"`

	entry string // stream entry id while a worker holds it
}

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
}

// Queue is the relay's durable queue in Redis: a hash per message, a
// stream (consumer group "delivery") of messages ready to go, and a sorted
// set of deferred messages by next attempt time.
type Queue struct {
	rdb  redis.UniversalClient
	opts QueueOptions
	p    string
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
	return &Queue{rdb: rdb, opts: opts, p: rkey.Prefix(rdb, opts.Prefix)}
}

func (q *Queue) msgKey(id string) string { return q.p + "relay:msg:" + id }
func (q *Queue) ready() string           { return q.p + "relay:ready" }
func (q *Queue) deferred() string        { return q.p + "relay:deferred" }
func (q *Queue) index() string           { return q.p + "relay:messages" }

// newID returns a short, time-ordered queue id such as "lq3x8k2a7f9c1e".
func newID(now time.Time) string {
	n, _ := rand.Int(rand.Reader, big.NewInt(36*36*36*36*36*36))
	r := strconv.FormatInt(n.Int64(), 36)
	return strconv.FormatInt(now.UnixMilli(), 36) + strings.Repeat("0", 6-len(r)) + r
}

// Put stores a new message and makes it ready for delivery, in one MULTI:
// once Put returns nil the message is in Redis (and on disk, as far as
// Redis's persistence promises; see CheckDurability), so the SMTP server
// may answer 250.
func (q *Queue) Put(ctx context.Context, m *Message) error {
	now := q.opts.Now().UTC()
	if m.ID == "" {
		m.ID = newID(now)
	}
	m.State, m.CreatedAt, m.Size = StateQueued, now, len(m.Data)
	meta, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, q.msgKey(m.ID), "meta", meta, "data", m.Data)
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

// EnsureGroup creates the delivery consumer group if it does not exist.
func (q *Queue) EnsureGroup(ctx context.Context) error {
	err := q.rdb.XGroupCreateMkStream(ctx, q.ready(), group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	return nil
}

// Next returns up to n messages for consumer to deliver: first those that
// another consumer took more than ClaimIdle ago and never finished (it is
// presumed dead: XAUTOCLAIM), then new ones, waiting up to block.
func (q *Queue) Next(ctx context.Context, consumer string, n int, block time.Duration) ([]*Message, error) {
	// First what this consumer holds and has not finished: entries
	// Reclaim gave it, or its own from before a restart.
	var entries []redis.XMessage
	own, err := q.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: consumer, Streams: []string{q.ready(), "0"}, Count: int64(n),
	}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	for _, s := range own {
		entries = append(entries, s.Messages...)
	}
	if len(entries) == 0 {
		claimed, _, err := q.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: q.ready(), Group: group, Consumer: consumer, MinIdle: q.opts.ClaimIdle, Start: "0-0", Count: int64(n),
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		entries = claimed
	}
	if len(entries) == 0 {
		res, err := q.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: group, Consumer: consumer, Streams: []string{q.ready(), ">"}, Count: int64(n), Block: block,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for _, s := range res {
			entries = append(entries, s.Messages...)
		}
	}
	var out []*Message
	for _, e := range entries {
		id, _ := e.Values["id"].(string)
		m, err := q.Get(ctx, id, true)
		if errors.Is(err, ErrNotFound) {
			// Deleted by an admin while queued: nothing left to do.
			q.rdb.XAck(ctx, q.ready(), group, e.ID)
			q.rdb.XDel(ctx, q.ready(), e.ID)
			continue
		}
		if err != nil {
			return out, err
		}
		m.entry = e.ID
		out = append(out, m)
	}
	return out, nil
}

// Alive marks consumers as running for ttl; a process calls it for its
// workers more often than ttl. Reclaim treats a consumer without this
// mark as dead.
func (q *Queue) Alive(ctx context.Context, consumers []string, ttl time.Duration) error {
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range consumers {
			p.Set(ctx, q.p+"relay:alive:"+c, "1", ttl)
		}
		return nil
	})
	return err
}

// Gone removes the alive marks of consumers that stop, so that what they
// leave unfinished is reclaimed at once by the next process.
func (q *Queue) Gone(ctx context.Context, consumers []string) error {
	keys := make([]string, len(consumers))
	for i, c := range consumers {
		keys[i] = q.p + "relay:alive:" + c
	}
	return q.rdb.Del(ctx, keys...).Err()
}

// Reclaim hands to consumer the unfinished entries of consumers that are no
// longer alive (a process killed mid-delivery), so that they are retried
// at once rather than after ClaimIdle, and returns how many it moved.
// ClaimIdle stays the last resort, for a consumer alive but stuck.
func (q *Queue) Reclaim(ctx context.Context, consumer string) (int, error) {
	sum, err := q.rdb.XPending(ctx, q.ready(), group).Result()
	if err != nil || sum.Count == 0 {
		return 0, err
	}
	moved := 0
	for name := range sum.Consumers {
		if name == consumer {
			continue
		}
		if n, err := q.rdb.Exists(ctx, q.p+"relay:alive:"+name).Result(); err != nil || n == 1 {
			continue
		}
		pend, err := q.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: q.ready(), Group: group, Consumer: name, Start: "-", End: "+", Count: 1000}).Result()
		if err != nil {
			return moved, err
		}
		ids := make([]string, len(pend))
		for i, p := range pend {
			ids[i] = p.ID
		}
		if len(ids) == 0 {
			continue
		}
		if err := q.rdb.XClaimJustID(ctx, &redis.XClaimArgs{Stream: q.ready(), Group: group, Consumer: consumer, Messages: ids}).Err(); err != nil {
			return moved, err
		}
		moved += len(ids)
		if len(ids) < 1000 {
			// Its list is empty now: forget the dead consumer.
			q.rdb.XGroupDelConsumer(ctx, q.ready(), group, name)
		}
	}
	return moved, nil
}

// ErrNotFound is returned for a queue id that does not exist.
var ErrNotFound = errors.New("no such queued message")

// Get loads a message; withData loads its raw bytes too.
func (q *Queue) Get(ctx context.Context, id string, withData bool) (*Message, error) {
	fields := []string{"meta"}
	if withData {
		fields = append(fields, "data")
	}
	vals, err := q.rdb.HMGet(ctx, q.msgKey(id), fields...).Result()
	if err != nil {
		return nil, err
	}
	meta, _ := vals[0].(string)
	if meta == "" {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	var m Message
	if err := json.Unmarshal([]byte(meta), &m); err != nil {
		return nil, fmt.Errorf("queue %s: %w", id, err)
	}
	if withData {
		d, _ := vals[1].(string)
		m.Data = []byte(d)
	}
	return &m, nil
}

// saveScript records the outcome of a try in one step: the message's new
// metadata, the acknowledgement of the stream entry the worker held, and
// either its next attempt time (defer) or its final state (finish). It
// does nothing to a message an admin deleted meanwhile, so a worker
// finishing late cannot bring it back.
//
// KEYS: the message's hash, the ready stream, the deferred set, the index.
// ARGV: meta JSON, the stream entry held ("" for none), "defer" or
// "finish", next attempt (ms) or how long to keep the record (ms), the
// queue id, the consumer group.
var saveScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[2] ~= '' then
    redis.call('XACK', KEYS[2], ARGV[6], ARGV[2])
    redis.call('XDEL', KEYS[2], ARGV[2])
  end
  return 0
end
redis.call('HSET', KEYS[1], 'meta', ARGV[1])
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[6], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
end
if ARGV[3] == 'defer' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
else
  redis.call('HDEL', KEYS[1], 'data')
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('ZREM', KEYS[4], ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1`)

func (q *Queue) save(ctx context.Context, m *Message, mode string, arg int64) error {
	meta, err := json.Marshal(m)
	if err != nil {
		return err
	}
	keys := []string{q.msgKey(m.ID), q.ready(), q.deferred(), q.index()}
	if err := saveScript.Run(ctx, q.rdb, keys, meta, m.entry, mode, arg, m.ID, group).Err(); err != nil {
		return fmt.Errorf("queue %s: %w", m.ID, err)
	}
	m.entry = ""
	return nil
}

// Finish records a message that reached a final state (sent or bounced).
// Its bytes are dropped; its record stays for `queue show` for keep
// (7 days when 0).
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

// promoteScript moves deferred messages whose time has come back to the
// ready stream, atomically, so that no message is in both or in neither.
var promoteScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('XADD', KEYS[2], '*', 'id', id)
end
return #due`)

// Promote makes deferred messages that are due ready again and returns
// how many it moved.
func (q *Queue) Promote(ctx context.Context) (int, error) {
	n, err := promoteScript.Run(ctx, q.rdb, []string{q.deferred(), q.ready()}, q.opts.Now().UnixMilli()).Int()
	return n, err
}

// retryNowScript moves a deferred message to the ready stream and marks
// its record queued, in one step. KEYS: the deferred set, the ready
// stream, the message's hash; ARGV: the queue id, StateQueued.
var retryNowScript = redis.NewScript(`
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local meta = redis.call('HGET', KEYS[3], 'meta')
if meta then
  local m = cjson.decode(meta)
  m.state = ARGV[2]
  m.next_attempt = nil
  redis.call('HSET', KEYS[3], 'meta', cjson.encode(m))
end
redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
return 1`)

// RetryNow makes a deferred message ready at once (`mailgate queue retry`).
func (q *Queue) RetryNow(ctx context.Context, id string) error {
	if _, err := q.Get(ctx, id, false); err != nil {
		return err
	}
	moved, err := retryNowScript.Run(ctx, q.rdb, []string{q.deferred(), q.ready(), q.msgKey(id)}, id, StateQueued).Int()
	if err != nil {
		return err
	}
	if moved == 0 {
		return fmt.Errorf("queue %s: not deferred (already being delivered, or finished)", id)
	}
	return nil
}

// Delete removes a message from the queue for good (`mailgate queue
// delete`). A worker holding it finds it gone and drops it.
func (q *Queue) Delete(ctx context.Context, id string) error {
	n, err := q.rdb.Del(ctx, q.msgKey(id)).Result()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	q.rdb.ZRem(ctx, q.deferred(), id)
	q.rdb.ZRem(ctx, q.index(), id)
	return nil
}

// List returns the messages still queued (ready, being delivered or
// deferred), oldest first.
func (q *Queue) List(ctx context.Context, limit int64) ([]*Message, error) {
	ids, err := q.rdb.ZRange(ctx, q.index(), 0, limit-1).Result()
	if err != nil {
		return nil, err
	}
	var out []*Message
	for _, id := range ids {
		m, err := q.Get(ctx, id, false)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// Stats returns how many messages are queued and when the oldest arrived.
func (q *Queue) Stats(ctx context.Context) (depth int64, oldest time.Time, err error) {
	depth, err = q.rdb.ZCard(ctx, q.index()).Result()
	if err != nil || depth == 0 {
		return depth, oldest, err
	}
	first, err := q.rdb.ZRangeWithScores(ctx, q.index(), 0, 0).Result()
	if err != nil || len(first) == 0 {
		return depth, oldest, err
	}
	return depth, time.UnixMilli(int64(first[0].Score)), nil
}
