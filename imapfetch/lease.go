// This file keeps the leases of a fetcher's workers: one goroutine renews
// all of them every LeaseTTL/3, in one pipeline where the account store
// can, instead of a goroutine, a timer and a round trip per account.

package imapfetch

import (
	"context"
	"sync"
	"time"

	"github.com/mailgate/mailgate/accounts"
)

// leaseRenewer is the optional part of AccountStore that renews many
// leases in one round trip (*accounts.Store has it).
type leaseRenewer interface {
	RenewLeases(ctx context.Context, emails []string, me accounts.Holder, ttl time.Duration) ([]accounts.Lease, error)
}

// renewBatch caps the leases renewed in one pipeline, so that Redis
// answers other clients between batches.
const renewBatch = 1000

// keeper renews the leases the workers of one Fetcher hold.
type keeper struct {
	f *Fetcher

	mu      sync.Mutex
	held    map[*heldLease]struct{}
	running bool // the renewing goroutine runs; it stops when held is empty

	// renewing is held while a batch is renewed, so that a release waits
	// for a renewal that would take the lease again after it.
	renewing sync.Mutex
}

// heldLease is one worker's lease while it polls.
type heldLease struct {
	w      *worker
	cancel context.CancelCauseFunc
	lastOK time.Time // last renewal that Redis answered (Options.Now)
}

// holdLease renews the lease every LeaseTTL/3 (with the fetcher's other
// leases), and every storeRetry while Redis does not answer, so that a
// lease Redis lost in a restart or failover is this worker's again as soon
// as Redis is back. The returned context is cancelled with cause
// errLeaseLost when another process holds the lease, or when it could not
// be renewed for two thirds of its lifetime (it may run out, and someone
// else may poll). release stops the renewal and gives the lease up.
func (w *worker) holdLease(ctx context.Context) (context.Context, func()) {
	k := &w.f.leases
	lctx, cancel := context.WithCancelCause(ctx)
	w.f.share.holding(w.email, cancel)
	h := &heldLease{w: w, cancel: cancel, lastOK: w.f.opts.Now()}
	k.mu.Lock()
	if k.held == nil {
		k.held = make(map[*heldLease]struct{})
	}
	k.held[h] = struct{}{}
	if !k.running {
		k.running = true
		go k.run()
	}
	k.mu.Unlock()
	return lctx, func() {
		w.f.share.released(w.email)
		k.mu.Lock()
		delete(k.held, h)
		k.mu.Unlock()
		k.renewing.Lock() // batches after this one leave h out
		k.renewing.Unlock()
		cancel(nil)
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		start := time.Now()
		// A release that fails leaves the lease ours: our next AcquireLease
		// goes on with it, another process waits for it to run out.
		w.f.redis.Report(rctx, start, w.f.acc.ReleaseLease(rctx, w.email, w.f.me))
	}
}

// run renews the held leases until none is left.
func (k *keeper) run() {
	o := &k.f.opts
	t := time.NewTimer(o.LeaseTTL / 3)
	defer t.Stop()
	for range t.C {
		k.mu.Lock()
		if len(k.held) == 0 {
			k.running = false
			k.mu.Unlock()
			return
		}
		due := make([]*heldLease, 0, len(k.held))
		for h := range k.held {
			due = append(due, h)
		}
		k.mu.Unlock()
		next := o.LeaseTTL / 3
		for len(due) > 0 {
			n := min(len(due), renewBatch)
			if !k.renewHeld(due[:n]) {
				next = min(jitter(storeRetry), o.LeaseTTL/3)
			}
			due = due[n:]
		}
		t.Reset(next)
	}
}

// renewHeld renews those of hs that are still held.
func (k *keeper) renewHeld(hs []*heldLease) bool {
	k.renewing.Lock()
	defer k.renewing.Unlock()
	k.mu.Lock()
	still := hs[:0]
	for _, h := range hs {
		if _, ok := k.held[h]; ok {
			still = append(still, h)
		}
	}
	k.mu.Unlock()
	if len(still) == 0 {
		return true
	}
	return k.renew(still)
}

// renew renews the leases of hs, and reports false if Redis did not
// answer for some of them.
func (k *keeper) renew(hs []*heldLease) bool {
	f := k.f
	o := &f.opts
	ctx, cancel := context.WithTimeout(context.Background(), max(o.LeaseTTL/3, time.Second))
	defer cancel()
	start := time.Now()
	leases, err := k.renewAll(ctx, hs)
	f.redis.Report(ctx, start, err)
	if err != nil { // Redis does not answer: logged by f.redis
		now := o.Now()
		for _, h := range hs {
			if unrenewed := now.Sub(h.lastOK); unrenewed > o.LeaseTTL*2/3 {
				h.w.log.Warn("imapfetch: could not renew the account lease for "+unrenewed.Round(time.Millisecond).String()+
					"; stopping polling, since it may run out and another process may take it", "err", err)
				k.drop(h)
			}
		}
		return false
	}
	ok := true
	for i, h := range hs {
		l := leases[i]
		if !l.Mine {
			// Another holder: as a renewal one at a time would, take over
			// the lease of a process on this host that is gone.
			start := time.Now()
			l, err = f.acc.AcquireLease(ctx, h.w.email, f.me, o.LeaseTTL)
			f.redis.Report(ctx, start, err)
			if err != nil {
				ok = false
				continue
			}
		}
		if l.Mine {
			h.lastOK = o.Now()
			continue
		}
		h.w.log.Warn("imapfetch: lease now held by " + l.String() + "; stopping polling")
		k.drop(h)
	}
	return ok
}

// renewAll renews the leases of hs in one pipeline, or one by one if the
// account store cannot.
func (k *keeper) renewAll(ctx context.Context, hs []*heldLease) ([]accounts.Lease, error) {
	f := k.f
	emails := make([]string, len(hs))
	for i, h := range hs {
		emails[i] = h.w.email
	}
	if r, ok := f.acc.(leaseRenewer); ok {
		return r.RenewLeases(ctx, emails, f.me, f.opts.LeaseTTL)
	}
	leases := make([]accounts.Lease, len(hs))
	for i, email := range emails {
		l, err := f.acc.AcquireLease(ctx, email, f.me, f.opts.LeaseTTL)
		if err != nil {
			return nil, err
		}
		leases[i] = l
	}
	return leases, nil
}

// drop stops renewing h's lease and ends its worker's session.
func (k *keeper) drop(h *heldLease) {
	k.mu.Lock()
	delete(k.held, h)
	k.mu.Unlock()
	h.cancel(errLeaseLost)
}
