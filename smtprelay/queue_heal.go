package smtprelay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Redis that comes back empty (restarted without persistence, flushed,
// failed over to a replica that never had the queue) has no ready stream
// and no consumer group: every read fails with NOGROUP, and nothing would
// be delivered again while the SMTP side still answers 250. This file is
// how the queue notices, says so (Health), and makes itself again.

// EnsureGroup creates the delivery consumer group if it does not exist.
func (q *Queue) EnsureGroup(ctx context.Context) error {
	err := q.rdb.XGroupCreateMkStream(ctx, q.ready(), group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	return nil
}

// isNoGroup: the ready stream or its consumer group is missing.
func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// readErr turns an error of reading the queue into what Next returns: a
// lost queue is made again (*LostError), a read the loss woke up
// (UNBLOCKED) is no error at all, the next read sees the loss.
func (q *Queue) readErr(ctx context.Context, err error) error {
	switch {
	case isNoGroup(err):
		return q.recreate(ctx)
	case strings.HasPrefix(err.Error(), "UNBLOCKED"):
		return nil
	}
	return err
}

// LostError is what a queue Redis lost took with it, as far as this
// process can tell: Next returns it once, from the worker that made the
// queue again.
type LostError struct {
	// Before is how many messages were queued (accepted, not finished)
	// at the last Health check that found the queue whole, at SeenAt;
	// -1 when there was none.
	Before int64
	SeenAt time.Time
	// Kept is how many of those Redis still has; Requeued how many of
	// them the stream no longer listed and were put back in it.
	Kept, Requeued int
	// InFlight is how many of them this process's workers were trying:
	// those tries end, delivered or not, but are recorded nowhere.
	InFlight int
}

// Lost is how many accepted messages are gone, or -1 if unknown.
func (e *LostError) Lost() int64 {
	if e.Before < 0 {
		return -1
	}
	return max(0, e.Before-int64(e.Kept))
}

func (e *LostError) Error() string {
	lost := "an unknown number of"
	if n := e.Lost(); n >= 0 {
		lost = fmt.Sprint(n)
	}
	return fmt.Sprintf("the delivery queue was missing from Redis and was made again: %s accepted messages were lost (%d in flight in this process, %d put back)",
		lost, e.InFlight, e.Requeued)
}

// depthSeen is the queue's depth at the last Health check that found it
// whole.
type depthSeen struct {
	depth int64
	at    time.Time
	ok    bool
}

// recreate makes the ready stream and its group again, reading from the
// start of the stream so that messages accepted since the loss are
// delivered, and puts back in it what Redis still holds and nothing
// lists any more. A *LostError reports it; nil means another worker did
// it first.
func (q *Queue) recreate(ctx context.Context) error {
	err := q.rdb.XGroupCreateMkStream(ctx, q.ready(), group, "0").Err()
	if err != nil && strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("making the delivery queue again: %w", err)
	}
	q.mu.Lock()
	lost := &LostError{Before: -1, InFlight: len(q.held) + q.gone}
	if q.seen.ok {
		lost.Before, lost.SeenAt = q.seen.depth, q.seen.at
	}
	q.held, q.clean = map[string]heldEntry{}, map[string]bool{}
	q.mu.Unlock()
	if err := q.rescue(ctx, lost); err != nil {
		return errors.Join(lost, fmt.Errorf("putting back what Redis kept: %w", err))
	}
	return lost
}

// requeueScript puts a message back in the ready stream unless it is
// gone, or deferred (then Promote brings it back).
// KEYS: the message's hash, the deferred set, the ready stream. ARGV: id.
var requeueScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('XADD', KEYS[3], '*', 'id', ARGV[1])
return 1`)

// rescue finds the messages Redis still has (the index) that neither the
// new stream nor the deferred set list, such as when only the stream was
// lost, and puts them back in the stream; a message a live worker is
// trying is left to it. It counts in lost what it found.
func (q *Queue) rescue(ctx context.Context, lost *LostError) error {
	var index *redis.ZSliceCmd
	var stream *redis.XMessageSliceCmd
	var deferred *redis.StringSliceCmd
	_, err := q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		index = p.ZRangeWithScores(ctx, q.index(), 0, -1)
		stream = p.XRange(ctx, q.ready(), "-", "+")
		deferred = p.ZRange(ctx, q.deferred(), 0, -1)
		return nil
	})
	if err != nil {
		return err
	}
	listed := map[string]bool{}
	for _, e := range stream.Val() {
		id, _ := e.Values["id"].(string)
		listed[id] = true
	}
	for _, id := range deferred.Val() {
		listed[id] = true
	}
	for _, z := range index.Val() {
		id, _ := z.Member.(string)
		if lost.Before >= 0 && int64(z.Score) <= lost.SeenAt.UnixMilli() {
			lost.Kept++
		}
		if listed[id] {
			continue
		}
		m, err := q.Get(ctx, id, false)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if m.State == StateSending {
			if n, err := q.rdb.Exists(ctx, q.aliveKey(m.Consumer)).Result(); err != nil || n == 1 {
				continue // its worker records the outcome
			}
		}
		n, err := requeueScript.Run(ctx, q.rdb, []string{q.msgKey(id), q.deferred(), q.ready()}, id).Int()
		if err != nil {
			return err
		}
		lost.Requeued += n
	}
	return nil
}

// Health is whether delivery can proceed, as Redis holds the queue now.
type Health struct {
	// Problem is "" when delivery can proceed, else what stops it, for
	// /readyz and `mailgate status`.
	Problem string
	Depth   int64 // messages queued (accepted, not finished)
}

// errNoQueue is what Health says while the stream or its group is
// missing.
const errNoQueue = "the delivery queue is missing from Redis (restarted empty, flushed, or failed over to a replica without it; or no `mailgate serve` ran yet): nothing is delivered until a delivery worker makes it again"

// Health reads whether the ready stream and its consumer group exist, and
// the queue's depth. The relay's housekeeping calls it every second, so
// that a loss can be counted against the last depth seen.
func (q *Queue) Health(ctx context.Context) (Health, error) {
	var groups *redis.XInfoGroupsCmd
	var depth *redis.IntCmd
	q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		groups = p.XInfoGroups(ctx, q.ready())
		depth = p.ZCard(ctx, q.index())
		return nil
	})
	if err := depth.Err(); err != nil {
		return Health{}, err
	}
	h := Health{Depth: depth.Val(), Problem: errNoQueue}
	if err := groups.Err(); err != nil && !strings.Contains(err.Error(), "no such key") {
		return Health{}, err
	}
	for _, g := range groups.Val() {
		if g.Name == group {
			h.Problem = ""
		}
	}
	if h.Problem == "" {
		q.mu.Lock()
		q.seen, q.gone = depthSeen{depth: h.Depth, at: q.opts.Now(), ok: true}, 0
		q.mu.Unlock()
	}
	return h, nil
}

// Problem is Health's Problem, for package status: "" while delivery can
// proceed.
func (q *Queue) Problem(ctx context.Context) (string, error) {
	h, err := q.Health(ctx)
	return h.Problem, err
}

// Ready reports whether delivery can proceed: Redis answers and holds the
// delivery queue. For /readyz.
func (r *Relay) Ready(ctx context.Context) error {
	h, err := r.q.Health(ctx)
	if err != nil {
		return fmt.Errorf("relay queue: %w", err)
	}
	if h.Problem != "" {
		return errors.New(h.Problem)
	}
	return nil
}
