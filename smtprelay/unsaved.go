package smtprelay

import (
	"context"
	"slices"
	"time"
)

// A try whose outcome Redis did not take (the connection refused right
// after the peer's 250, a failover under way) must not be forgotten: the
// message is still pending in Redis, and a worker reading it again would
// send it again to recipients already delivered. The outcome is kept here,
// in memory, and recorded before any further try of that message (settle)
// or as soon as Redis takes it (resaveAll, every second).

// keep holds m's outcome until Redis takes it.
func (r *Relay) keep(m *Message) {
	c := *m
	c.Data = nil
	c.Rcpts = slices.Clone(m.Rcpts)
	r.umu.Lock()
	r.unsaved[m.ID] = &c
	r.umu.Unlock()
	r.log.Warn("relay: delivery outcome not recorded yet: kept in memory, recorded before any further try",
		"queue_id", m.ID, "delivered", len(m.Delivered()), "pending", len(m.Pending()))
}

// settle records the outcome kept for m, if any, laid over m's record as
// read again from Redis, and reports whether it did so: that settles this
// turn of m (its record now says when it is due again, if ever).
func (r *Relay) settle(ctx context.Context, m *Message) (bool, error) {
	r.umu.Lock()
	defer r.umu.Unlock()
	u := r.unsaved[m.ID]
	if u == nil {
		return false, nil
	}
	m.merge(u)
	m.unbounced = u.unbounced
	if err := r.resave(ctx, m); err != nil {
		return true, err
	}
	if u.entry != "" && u.entry != m.entry {
		r.q.ack(ctx, u.entry)
	}
	delete(r.unsaved, m.ID)
	r.log.Info("relay: recorded a delivery outcome Redis had not taken; its delivered recipients are not sent it again",
		"queue_id", m.ID, "state", m.State, "delivered", len(m.Delivered()), "pending", len(m.Pending()))
	return true, nil
}

// resaveAll records the outcomes kept, while Redis takes them.
func (r *Relay) resaveAll(ctx context.Context) {
	r.umu.Lock()
	defer r.umu.Unlock()
	for id, u := range r.unsaved {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.resave(sctx, u)
		cancel()
		if err != nil {
			return // Redis still refuses: the next round tries again
		}
		delete(r.unsaved, id)
		r.log.Info("relay: recorded a delivery outcome Redis had not taken", "queue_id", id, "state", u.State)
	}
}

// resave records m's outcome as its try meant to: first the DSN that
// could not be queued, then the record, deferred or final.
func (r *Relay) resave(ctx context.Context, m *Message) error {
	if len(m.unbounced) > 0 {
		if err := r.queueDSN(ctx, m, m.unbounced); err != nil {
			return err
		}
		m.unbounced = nil
	}
	if m.State == StateDeferred {
		return r.q.Defer(ctx, m)
	}
	return r.q.Finish(ctx, m, 0)
}

func (r *Relay) unsavedCount() int {
	r.umu.Lock()
	defer r.umu.Unlock()
	return len(r.unsaved)
}

// markUnsent remembers that m's try was marked sending but sent nothing
// (the mark's answer did not come back), so that the next try of it here
// is not reported as interrupted.
func (r *Relay) markUnsent(id string) {
	r.umu.Lock()
	r.unsent[id] = true
	r.umu.Unlock()
}

// wasUnsent reports, once, whether markUnsent was told of id.
func (r *Relay) wasUnsent(id string) bool {
	r.umu.Lock()
	defer r.umu.Unlock()
	was := r.unsent[id]
	delete(r.unsent, id)
	return was
}

// interrupted reports a try taken over that had begun (StateSending) and
// whose outcome nobody recorded: its process was killed or cut off
// mid-try. Whether the peer took the message then is unknown, so the
// pending recipients are sent it again and may get it twice: the one
// at-least-once case, logged and counted.
func (r *Relay) interrupted(m *Message) {
	r.log.Warn("relay: taking over a try that never recorded its outcome: its pending recipients may get this message twice",
		"queue_id", m.ID, "consumer", m.Consumer, "try_started", m.TryStarted, "attempt", m.Attempts, "pending", len(m.Pending()))
	if r.opts.OnInterrupted != nil {
		r.opts.OnInterrupted()
	}
}

// queueLost says, loudly and once, that Redis lost the delivery queue and
// what went with it; Next has made it again.
func (r *Relay) queueLost(lost *LostError) {
	attrs := []any{"lost", lost.Lost(), "in_flight", lost.InFlight, "put_back", lost.Requeued}
	if lost.Before >= 0 {
		attrs = append(attrs, "queued_before", lost.Before, "counted_at", lost.SeenAt)
	}
	r.log.Error("relay: QUEUE LOST: Redis no longer had the delivery queue (restarted empty, flushed, or failed over to a replica without it); "+
		"made it again and delivery goes on, but the accepted messages it held are gone: those not in flight here will be neither delivered nor bounced", attrs...)
	if r.opts.OnQueueLost != nil {
		r.opts.OnQueueLost(lost.Lost())
	}
}
