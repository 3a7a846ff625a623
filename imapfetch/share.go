package imapfetch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/health"
)

// errLeaseYield is the cause of a session's context when this process hands
// the account's lease to another one because it holds more than its share.
var errLeaseYield = errors.New("imapfetch: account lease handed to another process: this one holds more than its share")

// sharer is the optional part of AccountStore that lets several fetcher
// processes on one Redis split the accounts between them: each takes about
// its share (accounts / live processes, rounded up) instead of the first
// one to start taking them all.
type sharer interface {
	Heartbeat(ctx context.Context, me accounts.Holder, held int, ttl time.Duration) ([]accounts.Peer, error)
	Leave(ctx context.Context, me accounts.Holder) error
	PeekLeases(ctx context.Context, emails []string) ([]accounts.LeaseState, error)
}

// share limits how many accounts this process polls to its share, and
// moves leases when processes join or leave. Once per renewal period (and
// sooner while leases are moving) it sends one heartbeat, which returns
// the live processes and how many leases each holds; from that it computes
// the share, asks the sessions above it to hand their lease over (they
// finish the mail in hand, log out and release it), and, when it is below
// its share while some leases are held by nobody alive, reads the leases
// of its waiting workers in one pipelined look and lets those that are
// free try. Workers never poll other processes' leases on their own, so a
// standby process costs one script call per period, not one per account.
//
// Its slots count the workers that hold their lease or may try to take it.
// A nil *share (PollOnce, a store without heartbeats) limits nothing.
type share struct {
	st     sharer
	me     accounts.Holder
	period time.Duration // renewal period: LeaseTTL/3
	ttl    time.Duration // of the heartbeat: LeaseTTL, as the leases it speaks for
	gap    time.Duration // the least time between two looks while leases move
	log    *slog.Logger
	redis  *health.Reporter
	poke   chan struct{}

	mu      sync.Mutex
	total   int // connected accounts, from Run's last listing
	target  int // this process's share; -1 until the first heartbeat
	slots   int
	blind   int // tries allowed without a look: leases nobody alive holds
	members map[string]*member
	queue   []*member // new workers waiting for a slot, oldest first
	said    [2]int    // processes and accounts last logged
}

// member is one worker as the share sees it.
type member struct {
	email    string
	wake     chan struct{} // a slot was granted
	slot     bool
	parked   bool // its lease was held elsewhere: waits for a look to find it free
	queued   bool
	yield    context.CancelCauseFunc // ends the session holding the lease
	yielding bool                    // asked to hand its lease over
}

func newShare(st sharer, f *Fetcher) *share {
	p := f.opts.LeaseTTL / 3
	return &share{st: st, me: f.me, period: p, ttl: f.opts.LeaseTTL, gap: max(p/5, 50*time.Millisecond),
		log: f.log, redis: f.redis, poke: make(chan struct{}, 1), target: -1, members: make(map[string]*member)}
}

// await returns once the worker may try to take its lease: at once when it
// has a slot; else when a slot is granted. It reports false if ctx ended
// first.
func (s *share) await(ctx context.Context, email string) bool {
	if s == nil {
		return true
	}
	s.mu.Lock()
	m := s.members[email]
	if m == nil {
		m = &member{email: email, wake: make(chan struct{}, 1)}
		s.members[email] = m
	}
	if m.yielding {
		// Back from the session that handed its lease over: the lease is
		// released, the slot goes back, and the worker stands by.
		s.unslot(m)
		m.parked = true
		s.pump()
		s.pokeLocked()
	}
	for !m.slot {
		if !m.parked && !m.queued {
			m.queued = true
			s.queue = append(s.queue, m)
			s.pump()
			continue
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return false // a slot granted meanwhile goes back with drop
		case <-m.wake:
		}
		s.mu.Lock()
	}
	s.mu.Unlock()
	return true
}

// standBy gives the slot back after a try found the lease held by another
// process: the worker waits in await until a look finds the lease free. It
// reports false when there is no share, and the worker polls the lease
// itself.
func (s *share) standBy(email string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.members[email]; m != nil {
		s.unslot(m)
		m.parked = true
	}
	s.pump()
	s.pokeLocked()
	return true
}

// holding registers how to end the session that holds email's lease.
func (s *share) holding(email string, yield context.CancelCauseFunc) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.members[email]; m != nil {
		m.yield = yield
		if m.yielding {
			yield(errLeaseYield)
		}
	}
}

// released says the session of holding ended.
func (s *share) released(email string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.members[email]; m != nil {
		m.yield = nil
	}
}

// drop forgets a worker that stopped, and gives its slot back.
func (s *share) drop(email string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.members[email]; m != nil {
		s.unslot(m)
		m.queued = false
		delete(s.members, email)
		s.pump()
	}
}

// setTotal records how many accounts are connected.
func (s *share) setTotal(n int) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n != s.total {
		s.total = n
		s.pokeLocked()
	}
}

func (s *share) pokeLocked() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// unslot gives m's slot back; a hand-over asked of it is moot then.
func (s *share) unslot(m *member) {
	m.yielding = false
	if m.slot {
		m.slot = false
		s.slots--
	}
}

func (s *share) grant(m *member) {
	m.slot, m.queued, m.parked = true, false, false
	s.slots++
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// pump grants free slots to new workers in order, when every waiting
// worker's lease may be free (nobody alive holds as many leases as there
// are accounts without one, as when the first process starts, or an
// account is added): a try costs no more than a look then. Otherwise the
// workers wait for a look to find which leases are free.
func (s *share) pump() {
	if s.blind < len(s.members)-s.slots {
		return
	}
	for s.target >= 0 && s.slots < s.target && s.blind > 0 && len(s.queue) > 0 {
		m := s.queue[0]
		s.queue = s.queue[1:]
		if m.queued && s.members[m.email] == m {
			s.blind--
			s.grant(m)
		}
	}
	if len(s.queue) == 0 {
		s.queue = nil
	}
}

// run sends the heartbeats and moves leases until ctx ends; at once, then
// every period, and a gap after a worker stood by or a share changed.
func (s *share) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.poke:
			if !sleep(ctx, time.Until(last.Add(s.gap))) {
				return
			}
		}
		last = time.Now()
		t.Reset(s.tick(ctx))
	}
}

// tick is one heartbeat and what follows from it; it returns when to look
// again.
func (s *share) tick(ctx context.Context) time.Duration {
	s.mu.Lock()
	held := s.slots
	s.mu.Unlock()
	start := time.Now()
	peers, err := s.st.Heartbeat(ctx, s.me, held, s.ttl)
	s.redis.Report(ctx, start, err)
	if err != nil {
		return jitter(storeRetry)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	// A process on this host that is gone holds nothing any more: its
	// leases are taken over at once (AcquireLease proves it gone).
	live, others := 1, 0
	var heldBy []int
	for _, p := range peers {
		if p.Holder != s.me && p.Holder.Liveness() != accounts.Gone {
			live++
			others += p.Held
			heldBy = append(heldBy, p.Held)
		}
	}
	s.target = (s.total + live - 1) / live
	s.blind = max(s.total-others-s.slots, 0)
	if s.said != [2]int{live, s.total} {
		s.said = [2]int{live, s.total}
		s.log.Info("imapfetch: sharing the accounts with the other fetcher processes on this Redis",
			"processes", live, "accounts", s.total, "share", s.target)
	}
	next := s.period
	moving := s.handOver()
	for _, h := range heldBy {
		moving = moving || h > s.target // it hands leases over soon
	}
	if moving {
		next = s.gap
	}
	s.pump()
	if s.slots < s.target && s.blind > 0 {
		if soon := s.look(ctx); soon > 0 {
			next = min(next, soon+s.gap/4)
		}
	}
	return next
}

// handOver asks sessions beyond the share to hand their lease over, and
// reports whether any is doing so.
func (s *share) handOver() bool {
	over := s.slots - s.target
	for _, m := range s.members {
		if m.yielding {
			over--
		}
	}
	asked := 0
	for _, m := range s.members {
		if over <= 0 {
			break
		}
		if m.slot && !m.yielding {
			m.yielding = true
			if m.yield != nil {
				m.yield(errLeaseYield)
			}
			over--
			asked++
		}
	}
	if asked > 0 {
		s.log.Info("imapfetch: handing account leases over to other processes", "leases", asked,
			"held", s.slots, "share", s.target)
	}
	for _, m := range s.members {
		if m.yielding {
			return true
		}
	}
	return false
}

// look reads the leases of the waiting workers and grants slots to those
// whose lease is free. It returns how soon the first lease held elsewhere
// runs out, if within a period, else 0. Called with s.mu held; unlocks it
// for the read.
func (s *share) look(ctx context.Context) time.Duration {
	var ms []*member
	var emails []string
	for e, m := range s.members {
		if !m.slot {
			ms = append(ms, m)
			emails = append(emails, e)
		}
	}
	if len(ms) == 0 {
		return 0
	}
	s.mu.Unlock()
	start := time.Now()
	ls, err := s.st.PeekLeases(ctx, emails)
	s.redis.Report(ctx, start, err)
	s.mu.Lock()
	if err != nil {
		return storeRetry
	}
	var soon time.Duration
	for i, m := range ms {
		if m.slot || s.members[m.email] != m {
			continue
		}
		switch l := ls[i]; {
		case l.Free(s.me):
			if s.slots < s.target {
				s.grant(m)
			}
		case l.Left > 0 && l.Left < s.period && (soon == 0 || l.Left < soon):
			soon = l.Left
		}
	}
	return soon
}

// leave takes this process out of the heartbeats on a clean stop, after
// its workers released their leases, so that the others take them at
// their next look instead of when its heartbeat runs out.
func (s *share) leave(ctx context.Context) {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.st.Leave(ctx, s.me); err != nil {
		s.log.Warn("imapfetch: could not leave the fetcher processes; the others take over when its heartbeat runs out", "err", err)
	}
}

// runShare starts the share's heartbeats, if there is a share; the
// returned func waits for them to stop once ctx ended, and leaves.
func (f *Fetcher) runShare(ctx context.Context) func() {
	if f.share == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.share.run(ctx)
	}()
	return func() {
		<-done
		f.share.leave(ctx)
	}
}
