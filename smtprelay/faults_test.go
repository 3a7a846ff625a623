package smtprelay

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/web"
)

// These tests break Redis on purpose (killed, flushed, frozen) around a
// delivery or an acceptance, and check what a user would notice: how many
// copies each recipient got, whether /readyz told the truth meanwhile,
// and what the log said.

// logBuffer collects a logger's output, safe for the relay's goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: still not %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runRelay rebuilds w's relay with its options changed by set, and runs
// its workers until the test ends.
func (w *relayWorld) runRelay(set func(o *RelayOptions)) {
	opts := w.relay.opts
	set(&opts)
	w.relay = NewRelay(w.q, w.acc, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.relay.Run(ctx)
	}()
	w.t.Cleanup(func() { cancel(); <-done })
}

// realClock puts w's queue and relay on the real clock, for tests where
// time must pass as it does in production (the relay's housekeeping).
func (w *relayWorld) realClock() {
	w.q = NewQueue(w.q.rdb, QueueOptions{ClaimIdle: w.q.opts.ClaimIdle})
	w.relay.opts.Now = time.Now
}

// serveSMTP runs the relay's SMTP side on q and returns its address.
func serveSMTP(t *testing.T, q *Queue) string {
	t.Helper()
	s := NewServer(q, ServerOptions{Hostname: "relay.test", AllowedNetworks: loopback, MaxMessageBytes: 1 << 20,
		SupportAddresses: func(context.Context) ([]string, error) { return []string{wsAcct}, nil },
		Logger:           slog.New(slog.DiscardHandler)})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return l.Addr().String()
}

// withSubject is an attachment notification (it goes direct, to the fake
// MX) with its own subject, to tell copies apart.
func withSubject(subject string) string {
	return strings.Replace(withPDF(wsAcct), "Subject: Your invoice", "Subject: "+subject, 1)
}

// received counts the messages the MX received with subject.
func received(w *relayWorld, subject string) int {
	n := 0
	for _, m := range w.mx.Received() {
		if bytes.Contains(m.Data, []byte("Subject: "+subject+"\r\n")) {
			n++
		}
	}
	return n
}

// TestRecordLostAfterDeliveryDeliversOnce: the MX answers 250 and Redis
// dies before the relay records it, then comes back (from its append-only
// file) with the message still pending and marked as being tried. The
// outcome kept in memory is recorded first: the recipient gets one copy,
// and the try is not mistaken for an interrupted one.
func TestRecordLostAfterDeliveryDeliversOnce(t *testing.T) {
	w := newRelayWorld(t, 500, "appendonly yes", "appendfsync always")
	ctx := context.Background()
	var logs logBuffer
	var interrupted atomic.Int32
	var once sync.Once
	restarted := make(chan error, 1)
	w.runRelay(func(o *RelayOptions) {
		o.Workers = 1
		o.Logger = logs.logger()
		o.OnInterrupted = func() { interrupted.Add(1) }
		o.OnDelivery = func(_ Route, out Outcome) {
			if out != Delivered {
				return
			}
			once.Do(func() {
				// Between the MX's 250 and our record: Redis is killed,
				// and restarted once the record has surely failed.
				w.redis.Kill()
				go func() { time.Sleep(3 * time.Second); restarted <- w.redis.Restart() }()
			})
		}
	})
	m := prepare([]byte(withSubject("record lost")), wsAcct, []string{customer}, "relay.test", w.clock.t, nil)
	if err := w.q.Put(ctx, m); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-restarted:
		if err != nil {
			t.Fatalf("restarting Redis: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the message was never delivered, so Redis was never killed")
	}
	back := time.Now()
	var got *Message
	waitFor(t, 20*time.Second, "recorded as sent", func() bool {
		var err error
		got, err = w.q.Get(ctx, m.ID, false)
		return err == nil && got.State == StateSent
	})
	t.Logf("outcome recorded %s after Redis was back", time.Since(back).Round(10*time.Millisecond))
	time.Sleep(1500 * time.Millisecond) // room for a second try, if one were coming
	if n := received(w, "record lost"); n != 1 {
		t.Errorf("the recipient got %d copies, want exactly 1", n)
	}
	if !slices.Equal(got.Delivered(), []string{customer}) || len(got.Pending()) != 0 {
		t.Errorf("record = %+v, want %s delivered", got.Rcpts, customer)
	}
	if !strings.Contains(logs.String(), "kept in memory") {
		t.Errorf("the record did not fail as the test meant it to; log:\n%s", logs.String())
	}
	if n := interrupted.Load(); n != 0 {
		t.Errorf("%d interrupted tries counted, want 0: the outcome was known", n)
	}
}

// TestTakenOverTryIsCountedAndLogged is the one at-least-once window: a
// worker began a try, the MX took the message, and the worker's process
// died before recording anything. Whoever takes it over cannot know: it
// sends again, and says so in the log and the metric.
func TestTakenOverTryIsCountedAndLogged(t *testing.T) {
	w := newRelayWorld(t, 500)
	ctx := context.Background()
	m := prepare([]byte(withSubject("taken over")), wsAcct, []string{customer}, "relay.test", w.clock.t, nil)
	if err := w.q.Put(ctx, m); err != nil {
		t.Fatal(err)
	}
	held, err := w.q.Next(ctx, "dead-process-0", 1, time.Second)
	if err != nil || len(held) != 1 {
		t.Fatalf("Next = %v, %v", held, err)
	}
	held[0].Attempts++
	if err := w.q.Begin(ctx, held[0]); err != nil {
		t.Fatal(err)
	}
	w.relay.own.Deliver(ctx, held[0].From, held[0].Pending(), held[0].Data)
	// What `queue show` reads meanwhile: being tried, by whom.
	if s, _ := w.q.Get(ctx, m.ID, false); s.State != StateSending || s.Consumer != "dead-process-0" || s.Attempts != 1 || s.TryStarted.IsZero() {
		t.Errorf("record during the try = %+v, want sending by dead-process-0, attempt 1", s)
	}

	var logs logBuffer
	var interrupted atomic.Int32
	opts := w.relay.opts
	opts.Logger, opts.OnInterrupted = logs.logger(), func() { interrupted.Add(1) }
	w.relay = NewRelay(w.q, w.acc, opts)
	time.Sleep(400 * time.Millisecond) // past ClaimIdle: the dead worker's entry may be claimed
	w.tryNext()
	if n := interrupted.Load(); n != 1 {
		t.Errorf("%d interrupted tries counted, want 1", n)
	}
	if !strings.Contains(logs.String(), "never recorded its outcome") || !strings.Contains(logs.String(), "consumer=dead-process-0") {
		t.Errorf("log does not report the try taken over:\n%s", logs.String())
	}
	if n := received(w, "taken over"); n != 2 {
		t.Errorf("the recipient got %d copies; this window sends again (2)", n)
	}
	if got, _ := w.q.Get(ctx, m.ID, false); got.State != StateSent || got.Attempts != 2 {
		t.Errorf("after the take-over: %+v, want sent after 2 attempts", got)
	}
}

// TestPartialDeliveryRetriesOnlyThePending: Gmail takes one recipient and
// defers the other; the retry goes to the deferred one only.
func TestPartialDeliveryRetriesOnlyThePending(t *testing.T) {
	w := newRelayWorld(t, 500)
	ctx := context.Background()
	const bob = "bob@customer.example"
	w.gmail.FailRcpt(bob, &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "mailbox busy"})
	m := prepare([]byte(notif(wsAcct, "n")), wsAcct, []string{customer, bob}, "relay.acme.example", w.clock.t, nil)
	if err := w.q.Put(ctx, m); err != nil {
		t.Fatal(err)
	}
	w.tryNext()
	got, _ := w.q.Get(ctx, m.ID, false)
	if got.State != StateDeferred || !slices.Equal(got.Delivered(), []string{customer}) || !slices.Equal(got.Pending(), []string{bob}) ||
		!strings.Contains(got.Rcpts[1].LastError, "450") {
		t.Fatalf("after the first try: %+v, want %s delivered and %s pending with its 450", got.Rcpts, customer, bob)
	}
	w.gmail.FailRcpt(bob, nil)
	w.clock.t = got.NextAttempt.Add(time.Second)
	if n, _ := w.q.Promote(ctx); n != 1 {
		t.Fatalf("promoted %d, want 1", n)
	}
	w.tryNext()
	final, _ := w.q.Get(ctx, m.ID, false)
	g := w.gmail.Received()
	if final.State != StateSent || len(g) != 2 || !slices.Equal(g[0].To, []string{customer}) || !slices.Equal(g[1].To, []string{bob}) {
		t.Errorf("final %s; Gmail received %d messages (%v), want one to %s then one to %s", final.State, len(g), g, customer, bob)
	}
}

// TestQueueLostIsMadeAgain: Redis is flushed while a message is being
// delivered. /readyz says delivery is stopped (it would be, for good,
// before the fix), a message accepted meanwhile is delivered once a worker
// makes the queue again, without a restart, and the log says loudly what
// was lost.
func TestQueueLostIsMadeAgain(t *testing.T) {
	w := newRelayWorld(t, 500)
	w.realClock()
	ctx := context.Background()
	var logs logBuffer
	var lostCalls []int64
	var mu sync.Mutex
	holding, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	w.runRelay(func(o *RelayOptions) {
		o.Workers = 1
		o.Logger = logs.logger()
		o.OnQueueLost = func(n int64) { mu.Lock(); lostCalls = append(lostCalls, n); mu.Unlock() }
		o.OnDelivery = func(Route, Outcome) {
			// The one worker stays in its first try while Redis is
			// flushed: nobody reads the queue meanwhile.
			once.Do(func() { close(holding); <-release })
		}
	})
	ready := httptest.NewServer(web.New(web.Options{Ready: w.relay.Ready}).Handler())
	t.Cleanup(ready.Close)
	readyz := func() (int, string) {
		resp, err := http.Get(ready.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := readyz(); code != 200 {
		t.Fatalf("/readyz before = %d %q", code, body)
	}
	addr := serveSMTP(t, w.q)
	if _, err := submit(t, addr, nil, wsAcct, []string{customer}, withSubject("first")); err != nil {
		t.Fatal(err)
	}
	<-holding
	waitFor(t, 5*time.Second, "counted by the housekeeping", func() bool {
		w.q.mu.Lock()
		defer w.q.mu.Unlock()
		return w.q.seen.ok && w.q.seen.depth == 1
	})
	if err := w.q.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if code, body := readyz(); code != 503 || !strings.Contains(body, "delivery queue is missing") {
		t.Errorf("/readyz after the flush = %d %q, want 503 saying the queue is missing", code, body)
	}
	if _, err := submit(t, addr, nil, wsAcct, []string{customer}, withSubject("second")); err != nil {
		t.Fatalf("accepting while the queue is missing: %v (it is stored; a worker will read it)", err)
	}
	if code, _ := readyz(); code != 503 {
		t.Errorf("/readyz = %d before any worker made the queue again, want 503", code)
	}
	close(release)
	waitFor(t, 10*time.Second, "delivered after the flush", func() bool { return received(w, "second") == 1 })
	if code, body := readyz(); code != 200 {
		t.Errorf("/readyz once the queue is back = %d %q", code, body)
	}
	time.Sleep(1500 * time.Millisecond)
	if a, b := received(w, "first"), received(w, "second"); a != 1 || b != 1 {
		t.Errorf("copies received: first %d, second %d; want 1 each", a, b)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(lostCalls, []int64{1}) {
		t.Errorf("OnQueueLost calls %v, want one, with the 1 message queued before the flush", lostCalls)
	}
	log := logs.String()
	if !strings.Contains(log, "level=ERROR msg=\"relay: QUEUE LOST") || !strings.Contains(log, "lost=1 in_flight=1") {
		t.Errorf("log lacks the loud error with counts:\n%s", log)
	}
	if n := strings.Count(log, "NOGROUP"); n > 0 {
		t.Errorf("log repeats NOGROUP %d times", n)
	}
}

// TestClientRetryAfter451IsDeliveredOnce: Redis freezes (SIGSTOP) while
// the relay stores a message; the client is told 451 and Redis, resumed,
// completes the store. That copy must never be delivered: the client's
// retry is the one copy. Frozen during the store itself, or during the
// confirmation that precedes the 250.
func TestClientRetryAfter451IsDeliveredOnce(t *testing.T) {
	for _, during := range []string{"store", "confirmation"} {
		t.Run("frozen during the "+during, func(t *testing.T) {
			w := newRelayWorld(t, 500)
			w.realClock()
			w.runRelay(func(o *RelayOptions) { o.Workers = 1 })
			ctx := context.Background()
			// The SMTP side's own client, with the read timeout and accept
			// time short enough for a test.
			rdb := redis.NewClient(&redis.Options{Addr: w.redis.Addr, ReadTimeout: time.Second})
			t.Cleanup(func() { rdb.Close() })
			qs := NewQueue(rdb, QueueOptions{AcceptTimeout: 2 * time.Second})
			var armed atomic.Bool // freeze Redis at the next confirmation
			qs.beforeConfirm = func() {
				if armed.CompareAndSwap(true, false) {
					w.redis.Pause()
				}
			}
			addr := serveSMTP(t, qs)
			// A first message, delivered, so Redis has the scripts loaded
			// as it would in production.
			if _, err := submit(t, addr, nil, wsAcct, []string{customer}, withSubject("warm-up")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "warm-up delivered", func() bool { return received(w, "warm-up") == 1 })

			armed.Store(during == "confirmation")
			c, err := smtp.Dial(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Mail(wsAcct, nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt(customer, nil); err != nil {
				t.Fatal(err)
			}
			wc, err := c.Data()
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(wc, withSubject("frozen"))
			if during == "store" {
				w.redis.Pause()
			}
			start := time.Now()
			err = wc.Close()
			if code(err) != 451 {
				w.redis.Resume()
				t.Fatalf("end of DATA with Redis frozen = %v, want 451", err)
			}
			t.Logf("451 after %s", time.Since(start).Round(10*time.Millisecond))
			if err := w.redis.Resume(); err != nil {
				t.Fatal(err)
			}
			// Resumed, Redis runs what waited: the store completes, and a
			// tentative copy appears (for the confirmation, it was there
			// already, and the confirmation now comes too late).
			if during == "store" {
				waitFor(t, 2*time.Second, "a tentative copy stored by the resumed Redis", func() bool {
					n, _ := w.q.rdb.ZCard(ctx, w.q.tentative()).Result()
					return n == 1
				})
			}
			// The client retries, as after any 451.
			if _, err := submit(t, addr, nil, wsAcct, []string{customer}, withSubject("frozen")); err != nil {
				t.Fatalf("retry: %v", err)
			}
			waitFor(t, 10*time.Second, "the retry delivered", func() bool { return received(w, "frozen") >= 1 })
			waitFor(t, 10*time.Second, "the tentative copy dropped", func() bool {
				n, _ := w.q.rdb.ZCard(ctx, w.q.tentative()).Result()
				return n == 0
			})
			time.Sleep(1500 * time.Millisecond)
			if n := received(w, "frozen"); n != 1 {
				t.Errorf("the recipient got %d copies, want 1", n)
			}
			keys, _ := w.q.rdb.Keys(ctx, w.q.msgKey("*")).Result()
			if len(keys) != 2 {
				t.Errorf("message records %v, want 2 (the warm-up and the retry; the frozen copy dropped)", keys)
			}
		})
	}
}

// TestStaleCopyIsNotSent: a worker holds a copy of a message read before
// an outcome was recorded for it elsewhere (housekeeping saving an outcome
// this process kept in memory, between the worker's read and its try).
// The copy still lists the delivered recipient as pending: Begin sees the
// newer record and nothing is sent from the copy, nor counted as a try
// taken over.
func TestStaleCopyIsNotSent(t *testing.T) {
	w := newRelayWorld(t, 500)
	ctx := context.Background()
	m := prepare([]byte(withPDF(wsAcct)), wsAcct, []string{customer}, "relay.test", w.clock.t, nil)
	if err := w.q.Put(ctx, m); err != nil {
		t.Fatal(err)
	}
	held, err := w.q.Next(ctx, "worker-0", 1, time.Second)
	if err != nil || len(held) != 1 {
		t.Fatalf("Next = %v, %v", held, err)
	}
	saved, err := w.q.Get(ctx, m.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	saved.apply(RouteDirect, Result{{Rcpt: customer, Outcome: Delivered}})
	saved.State = StateSent
	if err := w.q.Finish(ctx, saved, 0); err != nil {
		t.Fatal(err)
	}

	var logs logBuffer
	var interrupted atomic.Int32
	opts := w.relay.opts
	opts.Logger, opts.OnInterrupted = logs.logger(), func() { interrupted.Add(1) }
	w.relay = NewRelay(w.q, w.acc, opts)
	if err := w.relay.Process(ctx, held[0]); err != nil {
		t.Fatalf("Process(stale copy) = %v", err)
	}
	if n := len(w.mx.Received()) + len(w.gmail.Received()); n != 0 {
		t.Errorf("%d messages sent from a stale copy, want 0", n)
	}
	if n := interrupted.Load(); n != 0 {
		t.Errorf("%d interrupted tries counted for a stale copy, want 0", n)
	}
	if !strings.Contains(logs.String(), "record changed since it was read") {
		t.Errorf("the stale copy is not logged:\n%s", logs.String())
	}
	if got, _ := w.q.Get(ctx, m.ID, false); got.State != StateSent {
		t.Errorf("record after the stale copy = %+v, want sent", got)
	}
}
