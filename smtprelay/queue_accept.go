package smtprelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// How the SMTP side stores a message so that its answer and the queue
// agree: a 250 only for a message that will be delivered, and after a 451
// no copy that will be. PutTentative stores it, Confirm makes it
// deliverable just before the 250, DropTentative deletes what was never
// confirmed.

// tentativeScript stores a message that is not deliverable yet, listed in
// the tentative set until the end of its accept time by Redis's own clock
// (its TIME, so that our clock's skew does not matter), and returns that
// time. The record expires by itself a minute later, should no relay
// worker run to delete it.
//
// KEYS: the message's hash, the tentative set. ARGV: meta JSON, data,
// rev, the accept time (ms), the queue id.
var tentativeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'meta', ARGV[1], 'data', ARGV[2], 'rev', ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + 60000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[5])
return now`)

// PutTentative stores a message received over SMTP without making it
// deliverable: no worker ever tries a tentative message. Confirm does,
// right before the 250. Should the client be told 451 instead (Redis too
// slow, or frozen and resumed later), the copy is dropped once its accept
// time is over, so the client's retry is the only one delivered.
func (q *Queue) PutTentative(ctx context.Context, m *Message) error {
	q.stamp(m, StateTentative)
	meta, err := json.Marshal(m)
	if err != nil {
		return err
	}
	accept := q.opts.AcceptTimeout.Milliseconds()
	at, err := tentativeScript.Run(ctx, q.rdb, []string{q.msgKey(m.ID), q.tentative()}, meta, m.Data, m.rev, accept, m.ID).Int64()
	if err != nil {
		return fmt.Errorf("queue %s: %w", m.ID, err)
	}
	m.acceptedRedis, m.acceptedLocal, m.deadline = at, time.Now(), at+accept
	q.noteClock(at, m.acceptedLocal)
	return nil
}

// confirmScript makes a tentative message deliverable, unless Redis runs
// it after ARGV[2] by its own clock: a confirmation that waited in a
// frozen Redis comes after the client was told 451, and must not take
// effect. A message already confirmed is confirmed (a retried round
// trip); one dropped is not.
//
// KEYS: the message's hash, the tentative set, the index, the ready
// stream. ARGV: the queue id, the deadline (Redis clock, ms), the meta
// JSON of the queued message, its index score.
// Returns 1 (confirmed), 0 (dropped) or -1 (too late: left to be dropped).
var confirmScript = redis.NewScript(`
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return redis.call('EXISTS', KEYS[1])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[2]) then return -1 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[1], 'meta', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('XADD', KEYS[4], '*', 'id', ARGV[1])
return 1`)

// ErrNotConfirmed: a tentative message could not be confirmed in its
// accept time; it will not be delivered, and the client must be told 451.
var ErrNotConfirmed = errors.New("not confirmed within the accept time: it will not be delivered")

// confirmWindow is how long after it is sent a confirmation may still take
// effect in Redis. We wait longer than that for its answer (the Redis
// client's read timeout, seconds), so that a confirmation without an
// answer in time is one that did not take effect, save for a Redis that
// stalls after running it and before answering.
func (q *Queue) confirmWindow() time.Duration {
	return min(time.Second, q.opts.AcceptTimeout/4)
}

// Confirm makes a message stored by PutTentative deliverable, as the last
// step before the 250 (and, with WaitAOF, waits for it to be on disk). An
// error means the client must be told 451; ErrNotConfirmed that the copy
// will not be delivered.
func (q *Queue) Confirm(ctx context.Context, m *Message) error {
	window := q.confirmWindow()
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*window {
		return fmt.Errorf("queue %s: %w", m.ID, ErrNotConfirmed)
	}
	// The deadline in Redis's clock: when Redis stored the message, plus
	// the time since by our monotonic clock, plus the window.
	deadline := min(m.deadline, m.acceptedRedis+time.Since(m.acceptedLocal).Milliseconds()+window.Milliseconds())
	m.State = StateQueued
	meta, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if q.beforeConfirm != nil {
		q.beforeConfirm()
	}
	keys := []string{q.msgKey(m.ID), q.tentative(), q.index(), q.ready()}
	n, err := confirmScript.Run(ctx, q.rdb, keys, m.ID, deadline, meta, m.CreatedAt.UnixMilli()).Int()
	switch {
	case err != nil:
		m.State = StateTentative
		return fmt.Errorf("queue %s: %w", m.ID, err)
	case n != 1:
		m.State = StateTentative
		return fmt.Errorf("queue %s: %w", m.ID, ErrNotConfirmed)
	}
	if q.opts.WaitAOF {
		// Confirmed but perhaps not on disk: a 451 now may mean two
		// copies if the client retries; a 250 could mean none if Redis
		// crashes. Durability wins, as before confirmations existed.
		if err := q.waitAOF(ctx); err != nil {
			return fmt.Errorf("queue %s: confirmed, then %w", m.ID, err)
		}
	}
	return nil
}

// dropScript deletes the tentative messages among ARGV whose accept time
// is over by Redis's clock: they were never confirmed, and never will be.
// KEYS: the tentative set, then each message's hash in ARGV's order.
var dropScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for i, id in ipairs(ARGV) do
  local s = redis.call('ZSCORE', KEYS[1], id)
  if s and tonumber(s) < now then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', KEYS[i + 1])
    n = n + 1
  end
end
return n`)

// DropTentative deletes tentative messages whose accept time is over (the
// client was told 451, or never heard back) and returns how many.
func (q *Queue) DropTentative(ctx context.Context) (int, error) {
	ids, err := q.rdb.ZRange(ctx, q.tentative(), 0, 99).Result()
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	keys := []string{q.tentative()}
	args := make([]any, len(ids))
	for i, id := range ids {
		keys, args[i] = append(keys, q.msgKey(id)), id
	}
	return dropScript.Run(ctx, q.rdb, keys, args...).Int()
}
