package imapfetch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/internal/proctest"
)

// logBuffer keeps what a logger wrote, for tests of what the log says.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// keepLog makes o log to the test and to the returned buffer.
func keepLog(t *testing.T, o *Options) *logBuffer {
	buf := &logBuffer{}
	w := io.MultiWriter(&tWriter{t: t}, buf)
	o.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return buf
}

// holdFor puts a lease on email for h, as a fetcher h would have left it.
func (e *env) holdFor(email string, h accounts.Holder, ttl time.Duration) accounts.Lease {
	e.t.Helper()
	l, err := e.acc.AcquireLease(context.Background(), email, h, ttl)
	if err != nil || !l.Mine {
		e.t.Fatalf("AcquireLease(%v) = %+v, %v", h, l, err)
	}
	return l
}

// A restarted mailgate (new pid, same host) finds the lease its previous
// process left: that process is gone, so the lease is taken over at once,
// not after its TTL.
func TestLeaseOfGoneProcessTakenOver(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	me := accounts.NewHolder("")
	gone := accounts.Holder{Host: me.Host, PID: proctest.GonePID(t), Token: "previous-run"}
	e.holdFor(alice, gone, time.Minute)
	e.deliver(alice, 1, false)

	o := e.options()
	o.LeaseTTL = time.Minute
	log := keepLog(t, &o)
	start := time.Now()
	e.start(New(e.acc, e.st, o))
	waitFor(t, 10*time.Second, "the mail becomes a ticket", func() bool { return e.ticketCount() == 1 })
	took := time.Since(start)
	t.Logf("ticket %v after start, with the gone process's lease valid for another minute", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("ticket after %v: the lease of a gone process was waited for", took)
	}
	if want := "took over the account lease from " + gone.Process() + ": no such process runs on this host"; !strings.Contains(log.String(), want) {
		t.Errorf("log does not say %q:\n%s", want, log)
	}
	if strings.Contains(log.String(), "standing by") {
		t.Errorf("log stood by for a gone process:\n%s", log)
	}
}

// A lease whose holder lives (a process on this host) or cannot be checked
// (another host) is respected until it runs out, and the log names the
// holder and its expiry; then the fetcher takes over.
func TestLeaseOfLiveHolderRespected(t *testing.T) {
	for _, tc := range []struct {
		name     string
		holder   func(t *testing.T, host string) accounts.Holder
		liveness string
	}{
		{"another host", func(t *testing.T, _ string) accounts.Holder {
			// A pid that is gone here says nothing of a process there.
			return accounts.Holder{Host: "elsewhere.invalid", PID: proctest.GonePID(t), Token: "x"}
		}, "on another host"},
		{"live process on this host", func(t *testing.T, host string) accounts.Holder {
			return accounts.Holder{Host: host, PID: proctest.LivePID(t), Token: "x"}
		}, "alive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, fakegmail.Options{})
			e.connect(alice, 0)
			h := tc.holder(t, accounts.NewHolder("").Host)
			const ttl = 2 * time.Second
			l := e.holdFor(alice, h, ttl)
			e.deliver(alice, 1, false)

			o := e.options()
			log := keepLog(t, &o)
			e.start(New(e.acc, e.st, o))
			time.Sleep(time.Until(l.Until.Add(-300 * time.Millisecond)))
			if n := e.gm.Logins(alice); n != 0 {
				t.Fatalf("%d logins while %v held the lease", n, h)
			}
			// The worker computes the expiry from its own reading of the
			// TTL: allow for it falling on the other side of a second.
			said := false
			var want string
			for _, d := range []time.Duration{-50 * time.Millisecond, 50 * time.Millisecond} {
				want = "lease held by " + h.Process() + " (" + tc.liveness + ") until " + l.Until.Add(d).Local().Format(time.TimeOnly) + "; standing by"
				said = said || strings.Contains(log.String(), want)
			}
			if !said {
				t.Errorf("log does not say %q:\n%s", want, log)
			}
			waitFor(t, 5*time.Second, "the takeover after the lease ran out", func() bool { return e.ticketCount() == 1 })
			if !strings.Contains(log.String(), "took over the account lease from "+h.Process()+": it was released or ran out") {
				t.Errorf("log does not tell the takeover:\n%s", log)
			}
		})
	}
}

// Redis is killed while a worker runs and mail arrives, then restarted on
// the same port with its data (AOF): the worker resumes by itself, within a
// few seconds, however long the IMAP backoff may grow, whether its lease
// outlived the outage (the default 30s) or ran out during it (3s), and each
// mail becomes one ticket.
func TestRedisRestartResumes(t *testing.T) {
	for _, ttl := range []time.Duration{30 * time.Second, 3 * time.Second} {
		t.Run("lease "+ttl.String(), func(t *testing.T) {
			e := newEnvRedis(t, fakegmail.Options{}, "appendonly yes", "appendfsync always")
			e.connect(alice, 0)
			o := e.options()
			o.LeaseTTL = ttl
			o.BackoffMax = 5 * time.Minute   // the default
			o.PollInterval = 5 * time.Second // new mail is seen by IDLE
			log := keepLog(t, &o)
			e.start(New(e.acc, e.st, o))
			e.deliver(alice, 1, false)
			waitFor(t, 10*time.Second, "the first ticket", func() bool { return e.ticketCount() == 1 })

			// Long enough for the worker to notice (go-redis retries a
			// command for a few seconds) and to wait for Redis.
			e.redis.Kill()
			e.deliver(alice, 2, false) // IDLE reports it; its ingest fails
			time.Sleep(3 * time.Second)
			e.deliver(alice, 3, false)
			time.Sleep(5 * time.Second)
			if err := e.redis.Restart(); err != nil {
				t.Fatal(err)
			}
			back := time.Now()
			waitFor(t, 10*time.Second, "the mail of the outage to become tickets", func() bool {
				n, err := e.rdb.ZCard(context.Background(), e.st.Key("tickets")).Result()
				return err == nil && n == 3
			})
			t.Logf("tickets %v after Redis was back", time.Since(back).Round(time.Millisecond))
			time.Sleep(time.Second) // any duplicate would show by now
			if n := e.ticketCount(); n != 3 {
				t.Errorf("%d tickets, want 3", n)
			}
			e.wantOneCommentEach()
			for _, bad := range []string{"standing by", "is polling", "lease now held by"} {
				if strings.Contains(log.String(), bad) {
					t.Errorf("log says %q while no other process exists:\n%s", bad, log)
				}
			}
		})
	}
}

// A running worker whose lease Redis lost (a failover to a replica that
// had not seen it, a restart without persistence) takes it again at its
// next renewal: it knows its own token, so another process never sees the
// lease free for long, and the worker does not stop.
func TestLeaseRetakenAfterRedisLostIt(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	o := e.options()
	o.Holder = "the-worker"
	o.LeaseTTL = 900 * time.Millisecond
	log := keepLog(t, &o)
	e.start(New(e.acc, e.st, o))
	waitFor(t, 10*time.Second, "first poll", func() bool { return !e.account(alice).LastPoll.IsZero() })
	key := "mailgate:lease:" + alice
	if err := e.rdb.Del(context.Background(), key).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the lease taken again", func() bool {
		return strings.HasSuffix(e.rdb.Get(context.Background(), key).Val(), ":the-worker")
	})
	e.deliver(alice, 1, false)
	waitFor(t, 10*time.Second, "the ticket", func() bool { return e.ticketCount() == 1 })
	if n := e.gm.Logins(alice); n != 1 {
		t.Errorf("%d logins: the worker stopped its session over a lease it could take again", n)
	}
	if strings.Contains(log.String(), "lease now held by") {
		t.Errorf("the worker thought someone else held its lease:\n%s", log)
	}
}

// fetch --once takes over the lease of a gone process on this host, and
// names a live holder with its expiry.
func TestPollOnceLease(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	me := accounts.NewHolder("")
	e.holdFor(alice, accounts.Holder{Host: me.Host, PID: proctest.GonePID(t), Token: "x"}, time.Minute)
	e.deliver(alice, 1, false)
	if rep := pollOnce(t, New(e.acc, e.st, e.options()), alice); rep.Created != 1 {
		t.Errorf("PollOnce over a gone holder's lease = %+v, want 1 ticket", rep)
	}

	live := accounts.Holder{Host: me.Host, PID: proctest.LivePID(t), Token: "x"}
	l := e.holdFor(bob, live, time.Minute)
	e.connect(bob, 0)
	_, err := New(e.acc, e.st, e.options()).PollOnce(context.Background(), bob, nil)
	var held *LeaseHeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrLeaseHeld) || held.Lease.Holder != live || held.Lease.Liveness != accounts.Alive || held.Lease.Until.Sub(l.Until).Abs() > time.Second {
		t.Errorf("PollOnce while a live process holds the lease = %v, want a LeaseHeldError naming %v until %v", err, live, l.Until)
	}
	if n := e.gm.Logins(bob); n != 0 {
		t.Errorf("%d logins to bob's mailbox while another process held the lease", n)
	}
}
