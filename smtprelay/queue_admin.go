package smtprelay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/proclive"
)

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

// Alive marks consumers as running for ttl; a process calls it for its
// workers more often than ttl. Reclaim treats a consumer without this
// mark as dead.
func (q *Queue) Alive(ctx context.Context, consumers []string, ttl time.Duration) error {
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range consumers {
			p.Set(ctx, q.aliveKey(c), "1", ttl)
		}
		return nil
	})
	return err
}

func (q *Queue) aliveKey(consumer string) string { return q.p + "relay:alive:" + consumer }

// Gone removes the alive marks of consumers that stop, so that what they
// leave unfinished is reclaimed at once by the next process.
func (q *Queue) Gone(ctx context.Context, consumers []string) error {
	keys := make([]string, len(consumers))
	for i, c := range consumers {
		keys[i] = q.aliveKey(c)
	}
	return q.rdb.Del(ctx, keys...).Err()
}

// Reclaim hands to consumer the unfinished entries of consumers that are no
// longer alive (a process killed mid-delivery: its heartbeat ran out, or
// it ran on this machine and its pid is gone), so that they are retried
// at once rather than after ClaimIdle, and returns how many it moved.
// ClaimIdle stays the last resort, for a consumer alive but stuck. A
// queue Redis lost has nothing to reclaim: the next Next makes it again.
func (q *Queue) Reclaim(ctx context.Context, consumer string) (int, error) {
	sum, err := q.rdb.XPending(ctx, q.ready(), group).Result()
	if isNoGroup(err) {
		return 0, nil
	}
	if err != nil || sum.Count == 0 {
		return 0, err
	}
	moved := 0
	for name := range sum.Consumers {
		if name == consumer {
			continue
		}
		if n, err := q.rdb.Exists(ctx, q.aliveKey(name)).Result(); err != nil || n == 1 && !consumerGone(name) {
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
		q.dirty(consumer)
		if len(ids) < 1000 {
			// Its list is empty now: forget the dead consumer.
			q.rdb.XGroupDelConsumer(ctx, q.ready(), group, name)
		}
	}
	return moved, nil
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
  redis.call('HINCRBY', KEYS[3], 'rev', 1)
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
	q.rdb.ZRem(ctx, q.tentative(), id)
	return nil
}

// List returns the messages still queued (ready, being delivered or
// deferred), oldest first.
func (q *Queue) List(ctx context.Context, limit int64) ([]*Message, error) {
	ids, err := q.rdb.ZRange(ctx, q.index(), 0, limit-1).Result()
	if err != nil {
		return nil, err
	}
	msgs, errs := q.getMany(ctx, ids, false)
	var out []*Message
	for i, m := range msgs {
		if errors.Is(errs[i], ErrNotFound) {
			continue
		}
		if errs[i] != nil {
			return nil, errs[i]
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

// consumerGone reports whether a worker named host:pid-n (Run's names)
// belonged to a process on this machine that no longer exists: killed, its
// heartbeat has not run out yet, but nothing will finish its work.
func consumerGone(name string) bool {
	i := strings.LastIndexByte(name, ':')
	if i < 0 {
		return false
	}
	pid, _, _ := strings.Cut(name[i+1:], "-")
	n, err := strconv.Atoi(pid)
	return err == nil && proclive.Gone(name[:i], n)
}

// EachDeferred calls fn for the n deferred messages due soonest, soonest
// first, with what an operator reads of each (the console's queue table).
// Plain values keep the status package free of this one.
func (q *Queue) EachDeferred(ctx context.Context, n int, fn func(id string, rcpts, attempts int, next time.Time, lastErr string)) error {
	ids, err := q.rdb.ZRange(ctx, q.deferred(), 0, int64(n)-1).Result()
	if err != nil || len(ids) == 0 {
		return err
	}
	msgs, errs := q.getMany(ctx, ids, false)
	for i, m := range msgs {
		if errors.Is(errs[i], ErrNotFound) {
			continue
		}
		if errs[i] != nil {
			return errs[i]
		}
		fn(m.ID, len(m.Pending()), m.Attempts, m.NextAttempt, m.LastError)
	}
	return nil
}

// bounced is a sorted set of the messages bounced in the last two days,
// scored by when, for the count of bounces today. Finish's script writes
// it (saveScript).
func (q *Queue) bounced() string { return q.p + "relay:bounced" }

// bouncedKeep is how long a bounce stays counted: long enough for "today"
// in any time zone.
const bouncedKeep = 48 * time.Hour

// BouncedSince returns how many messages bounced at or after since (at
// most two days back).
func (q *Queue) BouncedSince(ctx context.Context, since time.Time) (int64, error) {
	return q.rdb.ZCount(ctx, q.bounced(), strconv.FormatInt(since.UnixMilli(), 10), "+inf").Result()
}
