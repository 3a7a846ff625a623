package imapfetch

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/internal/faultproxy"
	"github.com/mailgate/mailgate/internal/proctest"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tickets"
)

// shareWorld is several fetcher processes on one Redis and one fake Gmail,
// with mail arriving all along.
type shareWorld struct {
	*env
	emails []string
	stops  map[string]func() // by holder token

	created, dups atomic.Int64
	delivered     atomic.Int64
}

func newShareWorld(t *testing.T, n int) *shareWorld {
	w := &shareWorld{env: newEnv(t, fakegmail.Options{}), stops: map[string]func(){}}
	for i := range n {
		e := fmt.Sprintf("box%02d@support.test", i)
		w.connect(e, 0)
		w.emails = append(w.emails, e)
	}
	return w
}

// options for a process named token: short leases, so that moves take
// seconds; mail counted across processes.
func (w *shareWorld) options(token string) Options {
	o := w.env.options()
	o.Holder = token
	o.LeaseTTL = 1500 * time.Millisecond
	o.OnPoll = func(_ string, r Report, _ time.Duration, _ error) {
		w.created.Add(int64(r.Created))
		w.dups.Add(int64(r.Duplicates))
	}
	return o
}

// start runs a process on the env's Redis.
func (w *shareWorld) start(token string) {
	w.stops[token] = w.env.start(New(w.acc, w.st, w.options(token)))
}

// startBehind runs a process whose Redis connections go through a proxy,
// so the test can cut it off from Redis as a crash would: it renews and
// releases nothing any more.
func (w *shareWorld) startBehind(token string) *faultproxy.Proxy {
	p := faultproxy.Start(w.t, w.redis.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	w.t.Cleanup(func() { rdb.Close() })
	box, err := oauth.NewBox([]byte(strings.Repeat("k", oauth.KeySize)))
	if err != nil {
		w.t.Fatal(err)
	}
	acc := accounts.New(rdb, accounts.Options{Box: box})
	st := tickets.NewStore(rdb, tickets.Options{SupportAddresses: acc.SupportAddresses, Logger: w.log})
	o := w.options(token)
	o.Tokens = oauth.NewRegistry(w.oa.Config(""), oauth.RegistryOptions{Load: acc.RefreshToken, Save: acc.SaveRefreshToken, Logger: w.log})
	w.stops[token] = w.env.start(New(acc, st, o))
	return p
}

// mailAllAlong delivers a mail to the next mailbox every few milliseconds
// until the test ends or the returned stop is called.
func (w *shareWorld) mailAllAlong() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(15 * time.Millisecond):
			}
			if _, err := w.gm.Deliver(w.emails[i%len(w.emails)], testMail(w.emails[i%len(w.emails)], i), false); err != nil {
				w.t.Errorf("Deliver: %v", err)
				return
			}
			w.delivered.Add(1)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	w.t.Cleanup(stop)
	return stop
}

// split reads who holds each mailbox's lease: leases per holder token,
// "" for mailboxes nobody holds.
func (w *shareWorld) split() map[string]int {
	ctx := context.Background()
	pipe := w.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(w.emails))
	for i, e := range w.emails {
		cmds[i] = pipe.Get(ctx, "mailgate:lease:"+e)
	}
	_, _ = pipe.Exec(ctx)
	out := map[string]int{}
	for _, c := range cmds {
		v := c.Val()
		out[v[strings.LastIndex(v, ":")+1:]]++
	}
	return out
}

// balanced says whether every mailbox is held by one of live, each holding
// its even share give or take one.
func balanced(split map[string]int, live ...string) bool {
	total := 0
	lo, hi := -1, 0
	for _, tok := range live {
		n := split[tok]
		total += n
		if lo < 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
	}
	return split[""] == 0 && hi-lo <= 1 && total == sum(split)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func show(split map[string]int) string {
	var parts []string
	for k, v := range split {
		if k == "" {
			k = "nobody"
		}
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// rebalance waits until live hold every mailbox evenly and returns how
// long that took from since; then checks that the split holds still (no
// lease keeps moving back and forth).
func (w *shareWorld) rebalance(what string, since time.Time, live ...string) time.Duration {
	w.t.Helper()
	deadline := since.Add(20 * time.Second)
	for !balanced(w.split(), live...) {
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: not split evenly across %v after 20s: %s", what, live, show(w.split()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(since)
	time.Sleep(time.Second) // two renewal periods
	if s := w.split(); !balanced(s, live...) {
		w.t.Errorf("%s: split moved again after it was even: %s", what, show(s))
	}
	w.t.Logf("%s: every mailbox read, split %s, %v after", what, show(w.split()), took.Round(10*time.Millisecond))
	return took
}

// Three fetcher processes share 30 mailboxes on one Redis: each reads
// about a third; when one joins the others hand leases over, when one
// stops cleanly or is cut off as by a crash the rest take its mailboxes.
// Mail arrives all along: each mail becomes one ticket, ingested once, and
// no mailbox is ever read by two processes at once.
func TestProcessesShareMailboxes(t *testing.T) {
	w := newShareWorld(t, 30)
	stopMail := w.mailAllAlong()

	start := time.Now()
	w.start("a")
	w.start("b")
	w.rebalance("a and b start", start, "a", "b")

	join := time.Now()
	cut := w.startBehind("c")
	w.rebalance("c joins", join, "a", "b", "c")

	leave := time.Now()
	w.stops["b"]()
	w.rebalance("b stops cleanly", leave, "a", "c")
	// A mail that a crash cuts off between its ticket and its \Seen is
	// fetched again, and the dedupe counts it: only moves by hand-over and
	// clean stops must never ingest twice.
	dups := w.dups.Load()

	crash := time.Now()
	cut.Close() // c can reach Redis no more: no renewal, no release
	w.rebalance("c is cut off", crash, "a")

	stopMail()
	waitFor(t, 20*time.Second, "every mail to become a ticket", func() bool { return w.ticketCount() == w.delivered.Load() })
	time.Sleep(time.Second) // any second ingest would show by now
	if n, want := w.ticketCount(), w.delivered.Load(); n != want {
		t.Errorf("%d tickets for %d mails", n, want)
	}
	w.wantOneCommentEach()
	t.Logf("%d mails, %d tickets created, %d duplicate ingests", w.delivered.Load(), w.created.Load(), w.dups.Load())
	if dups != 0 {
		t.Errorf("%d mails were ingested twice while leases were handed over", dups)
	}
	for _, e := range w.emails {
		if n := w.gm.MostSessions(e); n > 1 {
			t.Errorf("%s had %d sessions at once: two readers of one mailbox", e, n)
		}
	}
}

// A process on this host killed with -9 leaves its heartbeat and half the
// leases behind, valid for another minute: the survivor sees that no
// process has its pid any more, counts it out of the share, and takes its
// mailboxes at once instead of when they run out.
func TestKilledProcessOnThisHostTakenOverAtOnce(t *testing.T) {
	w := newShareWorld(t, 20)
	dead := accounts.Holder{Host: accounts.NewHolder("").Host, PID: proctest.GonePID(t), Token: "dead"}
	for _, e := range w.emails[:10] {
		w.holdFor(e, dead, time.Minute)
	}
	if _, err := w.acc.Heartbeat(context.Background(), dead, 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	for i, e := range w.emails {
		w.deliver(e, i, false)
	}
	start := time.Now()
	w.start("a")
	took := w.rebalance("a starts beside a killed process's leases", start, "a")
	if took > 10*time.Second {
		t.Errorf("the killed process's leases were taken after %v: waited for them to run out", took)
	}
	waitFor(t, 10*time.Second, "every mail to become a ticket", func() bool { return w.ticketCount() == int64(len(w.emails)) })
}

// countingStore counts what a fetcher asks Redis about leases.
type countingStore struct {
	*accounts.Store
	mu       sync.Mutex
	acquires map[string]int
	peeks    int
}

func (c *countingStore) AcquireLease(ctx context.Context, email string, me accounts.Holder, ttl time.Duration) (accounts.Lease, error) {
	c.mu.Lock()
	c.acquires[email]++
	c.mu.Unlock()
	return c.Store.AcquireLease(ctx, email, me, ttl)
}

// RenewLeases counts each renewal of a batch as the AcquireLease it
// replaces.
func (c *countingStore) RenewLeases(ctx context.Context, emails []string, me accounts.Holder, ttl time.Duration) ([]accounts.Lease, error) {
	c.mu.Lock()
	for _, e := range emails {
		c.acquires[e]++
	}
	c.mu.Unlock()
	return c.Store.RenewLeases(ctx, emails, me, ttl)
}

func (c *countingStore) PeekLeases(ctx context.Context, emails []string) ([]accounts.LeaseState, error) {
	c.mu.Lock()
	c.peeks++
	c.mu.Unlock()
	return c.Store.PeekLeases(ctx, emails)
}

func (c *countingStore) reset() (acquires map[string]int, peeks int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	acquires, peeks = c.acquires, c.peeks
	c.acquires, c.peeks = map[string]int{}, 0
	return acquires, peeks
}

// Once the split is even, a process asks Redis nothing about the mailboxes
// the others read: it renews its own leases and sends its heartbeat, and
// no standby worker polls a lease, so the cost does not grow with the
// mailboxes other processes hold.
func TestStandbyPollsNoLeases(t *testing.T) {
	w := newShareWorld(t, 40)
	w.start("a")
	cs := &countingStore{Store: w.acc, acquires: map[string]int{}}
	w.stops["b"] = w.env.start(New(cs, w.st, w.options("b")))
	w.rebalance("a and b start", time.Now(), "a", "b")

	mine := map[string]bool{}
	for _, e := range w.emails {
		if strings.HasSuffix(w.rdb.Get(context.Background(), "mailgate:lease:"+e).Val(), ":b") {
			mine[e] = true
		}
	}
	cs.reset()
	const window = 3 * time.Second // six renewal periods
	time.Sleep(window)
	acquires, peeks := cs.reset()
	if s := w.split(); s["b"] != len(mine) || !balanced(s, "a", "b") {
		t.Fatalf("the split moved during the window: %s", show(s))
	}
	renewals, others := 0, 0
	for e, n := range acquires {
		if mine[e] {
			renewals += n
		} else {
			others += n
		}
	}
	t.Logf("in %v: %d renewals of its %d leases, %d tries of the others' %d, %d looks", window, renewals, len(mine), others, len(w.emails)-len(mine), peeks)
	if others != 0 || peeks != 0 {
		t.Errorf("b polled the leases a holds: %d tries, %d looks in %v", others, peeks, window)
	}
	if renewals < len(mine)*3 {
		t.Errorf("%d renewals of %d leases in %v: b does not renew its own", renewals, len(mine), window)
	}
}
