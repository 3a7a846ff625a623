package smtprelay

import (
	"context"
	"errors"
	"sync"
	"time"
)

// workerBatch is how many messages a worker takes from the queue at once
// and tries side by side. Each round trip to Redis waits for its fsync
// under appendfsync always, and Redis fsyncs once for all the clients of
// an event-loop turn: so more tries in flight, and one read for several
// messages, are what make delivery fast with durable Redis. The batch is
// done before the worker reads again, so its own pending entries are
// never tried twice at once.
const workerBatch = 4

func (r *Relay) work(ctx, hard context.Context, consumer string) {
	for ctx.Err() == nil {
		start := time.Now()
		msgs, err := r.q.Next(ctx, consumer, workerBatch, time.Second)
		r.readHealth.Report(ctx, start, err)
		var lost *LostError
		if errors.As(err, &lost) {
			r.queueLost(lost)
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				pause(ctx, time.Second)
			}
			continue
		}
		var wg sync.WaitGroup
		for _, m := range msgs {
			wg.Go(func() {
				// The try outlives a shutdown signal: a message half sent
				// and not recorded would be sent twice.
				tctx, cancel := context.WithTimeout(hard, r.opts.Timeouts.try())
				err := r.Process(tctx, m)
				cancel()
				if err != nil {
					r.log.Error("relay: recording a delivery", "queue_id", m.ID, "err", err)
					pause(ctx, time.Second)
				}
			})
		}
		wg.Wait()
	}
}

// pause waits d, or less if ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
