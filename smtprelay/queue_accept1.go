package smtprelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Storing a message and confirming it are two round trips when done one
// after the other, and under appendfsync always each waits for an fsync.
// Accept sends both in one pipeline. The confirmation's deadline, in
// Redis's clock, is then computed from an earlier reading of that clock
// (the store of a previous message) instead of this message's own store:
// the same sum (Redis's time at a reply, plus the time since by our
// monotonic clock, plus the window), so a confirmation still takes effect
// only within its window of being sent, and one that waited in a frozen
// Redis leaves a tentative copy that is dropped.

// clockFresh is how old a reading of Redis's clock may be to set a
// deadline with; older, the store's own reply is waited for.
const clockFresh = 10 * time.Second

// clockReading is Redis's clock (ms) in the reply to a store, and when
// that reply arrived by our monotonic clock.
type clockReading struct {
	redis int64
	local time.Time
}

// noteClock keeps the latest reading of Redis's clock.
func (q *Queue) noteClock(redisMs int64, local time.Time) {
	q.mu.Lock()
	if local.After(q.clock.local) {
		q.clock = clockReading{redisMs, local}
	}
	q.mu.Unlock()
}

// redisNow is the earliest Redis's clock can be now (ms), from the latest
// reading; false when there is none fresh. Redis read its clock before it
// replied, so it is at least that plus the time since the reply.
func (q *Queue) redisNow() (int64, bool) {
	q.mu.Lock()
	c := q.clock
	q.mu.Unlock()
	if c.local.IsZero() {
		return 0, false
	}
	age := time.Since(c.local)
	if age > clockFresh {
		return 0, false
	}
	return c.redis + age.Milliseconds(), true
}

// Accept stores a message received over SMTP and makes it deliverable,
// as PutTentative then Confirm do, in one round trip when it can (with
// WaitAOF, the wait for the fsync goes in the same round trip). An error
// means the client must be told 451; ErrNotConfirmed that the stored copy
// will not be delivered.
func (q *Queue) Accept(ctx context.Context, m *Message) error {
	now, ok := q.redisNow()
	if !ok {
		if err := q.PutTentative(ctx, m); err != nil {
			return err
		}
		return q.Confirm(ctx, m)
	}
	window := q.confirmWindow()
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*window {
		return fmt.Errorf("queue %s: %w", m.ID, ErrNotConfirmed)
	}
	q.stamp(m, StateTentative)
	tentative, err := json.Marshal(m)
	if err != nil {
		return err
	}
	m.State = StateQueued
	queued, err := json.Marshal(m)
	m.State = StateTentative
	if err != nil {
		return err
	}
	accept := q.opts.AcceptTimeout.Milliseconds()
	if q.beforeConfirm != nil {
		q.beforeConfirm()
	}
	var put, confirm, wait *redis.Cmd
	q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		put = tentativeScript.EvalSha(ctx, p, []string{q.msgKey(m.ID), q.tentative()}, tentative, m.Data, m.rev, accept, m.ID)
		confirm = confirmScript.EvalSha(ctx, p, []string{q.msgKey(m.ID), q.tentative(), q.index(), q.ready()},
			m.ID, now+window.Milliseconds(), queued, m.CreatedAt.UnixMilli())
		if q.opts.WaitAOF {
			wait = p.Do(ctx, "WAITAOF", 1, 0, 1000)
		}
		return nil
	})
	at, err := put.Int64()
	if isNoScript(err) {
		// Redis restarted or its scripts were flushed: nothing was
		// stored; the one-at-a-time path loads them again.
		if err := q.PutTentative(ctx, m); err != nil {
			return err
		}
		return q.Confirm(ctx, m)
	}
	if err != nil {
		return fmt.Errorf("queue %s: %w", m.ID, err)
	}
	m.acceptedRedis, m.acceptedLocal, m.deadline = at, time.Now(), at+accept
	q.noteClock(at, m.acceptedLocal)
	n, err := confirm.Int()
	switch {
	case isNoScript(err):
		return q.Confirm(ctx, m)
	case err != nil:
		return fmt.Errorf("queue %s: %w", m.ID, err)
	case n != 1:
		return fmt.Errorf("queue %s: %w", m.ID, ErrNotConfirmed)
	}
	m.State = StateQueued
	if wait != nil {
		res, err := wait.Slice()
		if err == nil && (len(res) < 1 || res[0] != int64(1)) {
			err = errors.New("not fsynced within 1s")
		}
		if err != nil {
			return fmt.Errorf("queue %s: confirmed, then WAITAOF: %w", m.ID, err)
		}
	}
	return nil
}

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }
