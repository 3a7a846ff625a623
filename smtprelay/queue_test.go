package smtprelay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/faultproxy"
	"github.com/mailgate/mailgate/internal/proclive"
	"github.com/mailgate/mailgate/internal/redistest"
)

type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

func newTestQueue(t *testing.T, extra ...string) (*Queue, *clock) {
	t.Helper()
	srv := redistest.Start(t, extra...)
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	q := NewQueue(srv.Client(t), QueueOptions{Now: c.Now, ClaimIdle: 200 * time.Millisecond})
	if err := q.EnsureGroup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return q, c
}

func putTest(t *testing.T, q *Queue) *Message {
	t.Helper()
	m := &Message{From: "support@acme.test", To: []string{"alice@customer.test"}, Data: []byte("Subject: hi\r\n\r\nbody\r\n")}
	if err := q.Put(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestQueueDeliverDeferPromoteFinish(t *testing.T) {
	q, c := newTestQueue(t)
	ctx := context.Background()
	m := putTest(t, q)
	got, err := q.Next(ctx, "w1", 10, time.Second)
	if err != nil || len(got) != 1 || got[0].ID != m.ID || string(got[0].Data) != string(m.Data) {
		t.Fatalf("Next = %+v, %v; want the message with its bytes", got, err)
	}
	// A temporary failure: deferred one minute, invisible until then.
	got[0].Attempts, got[0].LastError = 1, "421 try later"
	got[0].NextAttempt = c.t.Add(time.Minute)
	if err := q.Defer(ctx, got[0]); err != nil {
		t.Fatal(err)
	}
	if n, _ := q.Promote(ctx); n != 0 {
		t.Fatalf("Promote before time moved %d", n)
	}
	c.t = c.t.Add(2 * time.Minute)
	if n, _ := q.Promote(ctx); n != 1 {
		t.Fatalf("Promote after time moved %d, want 1", n)
	}
	again, _ := q.Next(ctx, "w1", 10, time.Second)
	if len(again) != 1 || again[0].Attempts != 1 || again[0].State != StateDeferred {
		t.Fatalf("retry = %+v", again)
	}
	again[0].State = StateSent
	if err := q.Finish(ctx, again[0], time.Hour); err != nil {
		t.Fatal(err)
	}
	if depth, _, _ := q.Stats(ctx); depth != 0 {
		t.Errorf("depth after finish = %d", depth)
	}
	// The script acknowledged the entry in the workers' group.
	if p, err := q.rdb.XPending(ctx, q.ready(), group).Result(); err != nil || p.Count != 0 {
		t.Errorf("pending entries after finish = %+v, %v; want none", p, err)
	}
	final, err := q.Get(ctx, m.ID, true)
	if err != nil || final.State != StateSent || len(final.Data) != 0 {
		t.Errorf("finished record = %+v, %v; want state sent, bytes dropped", final, err)
	}
	if more, _ := q.Next(ctx, "w1", 10, 10*time.Millisecond); len(more) != 0 {
		t.Errorf("finished message delivered again: %+v", more)
	}
}

// TestDeadWorkerMessageIsReclaimed: a worker that took a message and died
// (never deferred nor finished it) loses it to another after ClaimIdle.
func TestDeadWorkerMessageIsReclaimed(t *testing.T) {
	q, _ := newTestQueue(t)
	ctx := context.Background()
	m := putTest(t, q)
	if got, _ := q.Next(ctx, "dead", 10, time.Second); len(got) != 1 {
		t.Fatal("first worker got nothing")
	}
	if got, _ := q.Next(ctx, "alive", 10, 10*time.Millisecond); len(got) != 0 {
		t.Fatalf("message handed out twice at once: %+v", got)
	}
	time.Sleep(300 * time.Millisecond)
	got, err := q.Next(ctx, "alive", 10, 10*time.Millisecond)
	if err != nil || len(got) != 1 || got[0].ID != m.ID {
		t.Fatalf("reclaim = %+v, %v", got, err)
	}
}

func TestDeleteWhileDeliveringDoesNotResurrect(t *testing.T) {
	q, c := newTestQueue(t)
	ctx := context.Background()
	m := putTest(t, q)
	got, _ := q.Next(ctx, "w", 1, time.Second)
	if err := q.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	got[0].NextAttempt = c.t
	if err := q.Defer(ctx, got[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(ctx, m.ID, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted message came back: %v", err)
	}
	if n, _ := q.Promote(ctx); n != 0 {
		t.Errorf("deleted message scheduled again")
	}
}

func TestCheckDurability(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		conf []string
		warn string
	}{
		{nil, "appendonly no"},
		{[]string{"appendonly yes", "appendfsync always"}, ""},
		{[]string{"appendonly yes", "appendfsync everysec"}, "everysec"},
	} {
		srv := redistest.Start(t, tc.conf...)
		d := CheckDurability(ctx, srv.Client(t))
		if tc.warn == "" && d.Warning != "" || tc.warn != "" && !strings.Contains(d.Warning, tc.warn) && !d.WaitAOF {
			t.Errorf("%v: %+v, want warning containing %q", tc.conf, d, tc.warn)
		}
	}
}

func TestRetryNowMarksQueued(t *testing.T) {
	q, c := newTestQueue(t)
	ctx := context.Background()
	m := putTest(t, q)
	got, _ := q.Next(ctx, "w", 1, time.Second)
	got[0].NextAttempt = c.t.Add(time.Hour)
	q.Defer(ctx, got[0])
	if err := q.RetryNow(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	after, _ := q.Get(ctx, m.ID, false)
	if after.State != StateQueued || !after.NextAttempt.IsZero() {
		t.Errorf("after retry: %+v, want queued without a next attempt", after)
	}
	if again, _ := q.Next(ctx, "w", 1, time.Second); len(again) != 1 {
		t.Error("retried message not ready")
	}
	if err := q.RetryNow(ctx, m.ID); err == nil {
		t.Error("second retry of a message not deferred succeeded")
	}
}

// TestReclaimTakesOverDeadWorkers: a process killed mid-delivery leaves its
// entry pending; a live process takes it over as soon as the dead one's
// heartbeat is gone, without waiting for ClaimIdle, and leaves a live
// worker's entries alone.
func TestReclaimTakesOverDeadWorkers(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	q := NewQueue(srv.Client(t), QueueOptions{ClaimIdle: time.Hour})
	q.EnsureGroup(ctx)
	dead := putTest(t, q)
	if got, _ := q.Next(ctx, "old-process-0", 1, time.Second); len(got) != 1 {
		t.Fatal("no message for the worker that will die")
	}
	putTest(t, q)
	q.Alive(ctx, []string{"busy-0"}, time.Minute)
	if got, _ := q.Next(ctx, "busy-0", 1, time.Second); len(got) != 1 {
		t.Fatal("no message for the live worker")
	}
	n, err := q.Reclaim(ctx, "new-process-0")
	if err != nil || n != 1 {
		t.Fatalf("Reclaim = %d, %v; want the dead worker's one message", n, err)
	}
	got, err := q.Next(ctx, "new-process-0", 1, 10*time.Millisecond)
	if err != nil || len(got) != 1 || got[0].ID != dead.ID {
		t.Fatalf("after Reclaim, Next = %+v, %v; want %s", got, err, dead.ID)
	}
}

// TestReclaimTakesOverKilledProcessAtOnce: a process killed on this
// machine still has a fresh heartbeat, but its pid is gone: its restart
// takes its entries over at once, not after the heartbeat runs out. A
// worker of a live process (this one) with a heartbeat keeps its own.
func TestReclaimTakesOverKilledProcessAtOnce(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	q := NewQueue(srv.Client(t), QueueOptions{ClaimIdle: time.Hour})
	q.EnsureGroup(ctx)
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	killed := fmt.Sprintf("%s:%d-0", proclive.Host(), exited.Process.Pid)
	live := fmt.Sprintf("%s:%d-1", proclive.Host(), os.Getpid())
	q.Alive(ctx, []string{killed, live}, time.Minute)
	dead := putTest(t, q)
	if got, _ := q.Next(ctx, killed, 1, time.Second); len(got) != 1 {
		t.Fatal("no message for the worker that was killed")
	}
	putTest(t, q)
	if got, _ := q.Next(ctx, live, 1, time.Second); len(got) != 1 {
		t.Fatal("no message for the live worker")
	}
	n, err := q.Reclaim(ctx, "restarted-0")
	if err != nil || n != 1 {
		t.Fatalf("Reclaim = %d, %v; want the killed process's one message, its heartbeat notwithstanding", n, err)
	}
	got, err := q.Next(ctx, "restarted-0", 1, 10*time.Millisecond)
	if err != nil || len(got) != 1 || got[0].ID != dead.ID {
		t.Fatalf("after Reclaim, Next = %+v, %v; want %s", got, err, dead.ID)
	}
}

// TestTentativeIsDeliveredOnlyOnceConfirmed: what the SMTP side stores is
// invisible to the workers and the queue listing until Confirm, which a
// retried round trip may repeat.
func TestTentativeIsDeliveredOnlyOnceConfirmed(t *testing.T) {
	q, _ := newTestQueue(t)
	ctx, cancel := context.WithTimeout(context.Background(), q.AcceptTimeout())
	defer cancel()
	m := &Message{From: "support@acme.test", To: []string{"alice@customer.test"}, Data: []byte("Subject: hi\r\n\r\nbody\r\n")}
	if err := q.PutTentative(ctx, m); err != nil {
		t.Fatal(err)
	}
	if got, _ := q.Next(ctx, "w", 1, 10*time.Millisecond); len(got) != 0 {
		t.Fatalf("a tentative message was handed to a worker: %+v", got[0])
	}
	if depth, _, _ := q.Stats(ctx); depth != 0 {
		t.Errorf("queue depth %d with only a tentative message, want 0", depth)
	}
	if s, _ := q.Get(ctx, m.ID, false); s.State != StateTentative {
		t.Errorf("stored state %q, want tentative", s.State)
	}
	if err := q.Confirm(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := q.Confirm(ctx, m); err != nil {
		t.Errorf("confirming again (a retried round trip) = %v, want nil", err)
	}
	got, err := q.Next(ctx, "w", 2, time.Second)
	if err != nil || len(got) != 1 || got[0].ID != m.ID || got[0].State != StateQueued {
		t.Fatalf("after Confirm, Next = %+v, %v; want the message once, queued", got, err)
	}
	if n, _ := q.DropTentative(ctx); n != 0 {
		t.Errorf("DropTentative dropped %d confirmed messages", n)
	}
}

// TestLateConfirmationTakesNoEffect: a confirmation Redis runs after its
// deadline (it waited in a frozen Redis while the client was told 451)
// leaves the message tentative, and it is dropped.
func TestLateConfirmationTakesNoEffect(t *testing.T) {
	srv := redistest.Start(t)
	q := NewQueue(srv.Client(t), QueueOptions{AcceptTimeout: 400 * time.Millisecond})
	ctx := context.Background()
	q.EnsureGroup(ctx)
	m := &Message{From: "support@acme.test", To: []string{"alice@customer.test"}, Data: []byte("Subject: hi\r\n\r\nbody\r\n")}
	if err := q.PutTentative(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.deadline = m.acceptedRedis - 1 // as if Redis ran it late
	if err := q.Confirm(ctx, m); !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("late Confirm = %v, want ErrNotConfirmed", err)
	}
	if got, _ := q.Next(ctx, "w", 1, 10*time.Millisecond); len(got) != 0 {
		t.Fatal("a message confirmed too late was handed to a worker")
	}
	time.Sleep(500 * time.Millisecond)
	if n, err := q.DropTentative(ctx); n != 1 || err != nil {
		t.Fatalf("DropTentative = %d, %v; want 1", n, err)
	}
	if _, err := q.Get(ctx, m.ID, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("dropped message still stored: %v", err)
	}
}

// TestOldRecordsReadRecipients: a record written before recipients had
// their own state keeps the pending ones in "to" and the delivered ones in
// "done".
func TestOldRecordsReadRecipients(t *testing.T) {
	q, _ := newTestQueue(t)
	ctx := context.Background()
	old := `{"id":"old1","from":"support@acme.test","to":["b@x.test"],"done":["a@x.test"],"state":"deferred","attempts":1,"created_at":"2026-11-25T10:00:00Z"}`
	q.rdb.HSet(ctx, q.msgKey("old1"), "meta", old, "data", "Subject: x\r\n\r\nx\r\n")
	m, err := q.Get(ctx, "old1", false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Delivered(), []string{"a@x.test"}) || !slices.Equal(m.Pending(), []string{"b@x.test"}) || !slices.Equal(m.To, []string{"a@x.test", "b@x.test"}) {
		t.Errorf("old record read as %+v", m)
	}
}

// TestLostQueueIsMadeAgain: Next finds the stream and its group gone,
// makes them again, says what was lost, and reads on; a stream lost alone
// (the records kept) has its messages put back.
func TestLostQueueIsMadeAgain(t *testing.T) {
	q, c := newTestQueue(t)
	ctx := context.Background()
	putTest(t, q)
	putTest(t, q)
	if h, err := q.Health(ctx); err != nil || h.Problem != "" || h.Depth != 2 {
		t.Fatalf("Health = %+v, %v; want whole, depth 2", h, err)
	}
	q.rdb.FlushAll(ctx)
	c.t = c.t.Add(time.Second)
	if h, _ := q.Health(ctx); h.Problem == "" {
		t.Error("Health after a flush says delivery can proceed")
	}
	after := putTest(t, q) // accepted while the group is missing
	_, err := q.Next(ctx, "w", 10, 10*time.Millisecond)
	var lost *LostError
	if !errors.As(err, &lost) || lost.Lost() != 2 || lost.Requeued != 0 {
		t.Fatalf("Next after the flush = %v, want a LostError counting 2 lost", err)
	}
	got, err := q.Next(ctx, "w", 10, 10*time.Millisecond)
	if err != nil || len(got) != 1 || got[0].ID != after.ID {
		t.Fatalf("Next once made again = %+v, %v; want the message accepted meanwhile", got, err)
	}
	if h, _ := q.Health(ctx); h.Problem != "" {
		t.Errorf("Health once made again: %q", h.Problem)
	}

	// Only the stream goes: the records are there, and go back in it.
	q.Finish(ctx, got[0], time.Hour)
	kept := putTest(t, q)
	q.Health(ctx)
	q.rdb.Del(ctx, q.ready())
	_, err = q.Next(ctx, "w", 10, 10*time.Millisecond)
	if !errors.As(err, &lost) || lost.Lost() != 0 || lost.Requeued != 1 {
		t.Fatalf("Next after the stream alone went = %v, want nothing lost, 1 put back", err)
	}
	if got, _ := q.Next(ctx, "w", 10, 10*time.Millisecond); len(got) != 1 || got[0].ID != kept.ID {
		t.Errorf("put back: %+v, want %s", got, kept.ID)
	}
}

// TestOutcomeSavedTwiceChangesNothing: saving again an outcome whose first
// save took effect (its answer lost) leaves a newer record alone.
func TestOutcomeSavedTwiceChangesNothing(t *testing.T) {
	q, c := newTestQueue(t)
	ctx := context.Background()
	putTest(t, q)
	got, _ := q.Next(ctx, "w", 1, time.Second)
	m := got[0]
	stale := *m
	m.NextAttempt = c.t.Add(time.Minute)
	if err := q.Defer(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.State = StateSent
	if err := q.Finish(ctx, m, time.Hour); err != nil {
		t.Fatal(err)
	}
	stale.NextAttempt = c.t.Add(time.Minute)
	if err := q.Defer(ctx, &stale); err != nil {
		t.Fatal(err)
	}
	if after, _ := q.Get(ctx, m.ID, false); after.State != StateSent {
		t.Errorf("a stale outcome replaced the record: state %s, want sent", after.State)
	}
	if n, _ := q.rdb.ZCard(ctx, q.deferred()).Result(); n != 0 {
		t.Errorf("a stale outcome scheduled the finished message again")
	}
}

// TestBounceCountedWithFinish: today's count of bounces is written in the
// same step as the bounce itself. A Finish whose answer is lost (the
// connection to Redis cut after the script ran, as when the relay dies
// there) has still counted it, and the Finish saved again afterwards,
// or twice for the same message, counts it once, at its first time.
func TestBounceCountedWithFinish(t *testing.T) {
	srv := redistest.Start(t)
	proxy := faultproxy.Start(t, srv.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	q := NewQueue(rdb, QueueOptions{Now: c.Now, ClaimIdle: 200 * time.Millisecond})
	ctx := context.Background()
	if err := q.EnsureGroup(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		putTest(t, q)
	}
	got, err := q.Next(ctx, "w", 2, time.Second)
	if err != nil || len(got) != 2 {
		t.Fatalf("Next = %d messages, %v; want 2", len(got), err)
	}
	lost, twice := got[0], got[1]
	bouncedToday := func() int64 {
		t.Helper()
		n, err := q.BouncedSince(ctx, c.t.Truncate(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// The script's reply ":1" never reaches the relay.
	again := *lost
	lost.State, lost.LastError = StateBounced, "550 5.1.1 no such user"
	cut := proxy.Arm(faultproxy.Rule{Dir: faultproxy.ToClient, Match: []byte(":1\r\n"), Before: true, Action: faultproxy.Close})
	if err := q.Finish(ctx, lost, 0); err == nil {
		t.Fatal("Finish with its answer cut returned nil; the test did not cut it")
	}
	if !cut.Wait(time.Second) {
		t.Fatal("the proxy never cut the answer")
	}
	if n := bouncedToday(); n != 1 {
		t.Errorf("bounced today after a Finish whose answer was lost = %d, want 1", n)
	}
	// The relay saves the outcome again (the record is newer: a no-op).
	again.State, again.LastError = StateBounced, "550 5.1.1 no such user"
	c.t = c.t.Add(time.Minute)
	if err := q.Finish(ctx, &again, 0); err != nil {
		t.Fatal(err)
	}

	// The same message finished twice, the second time a day later.
	twice.State, twice.LastError = StateBounced, "550 5.1.1 no such user"
	if err := q.Finish(ctx, twice, 0); err != nil {
		t.Fatal(err)
	}
	if n := bouncedToday(); n != 2 {
		t.Errorf("bounced today after two bounces, one saved twice = %d, want 2", n)
	}
	c.t = c.t.Add(24 * time.Hour)
	if err := q.Finish(ctx, twice, 0); err != nil {
		t.Fatal(err)
	}
	if n := bouncedToday(); n != 0 {
		t.Errorf("bounced the next day = %d, want 0: yesterday's bounce saved again today counted as today's", n)
	}

	// A sent message is not a bounce.
	sent := putTest(t, q)
	got, _ = q.Next(ctx, "w", 1, time.Second)
	if len(got) != 1 || got[0].ID != sent.ID {
		t.Fatalf("Next = %+v, want %s", got, sent.ID)
	}
	got[0].State = StateSent
	if err := q.Finish(ctx, got[0], 0); err != nil {
		t.Fatal(err)
	}
	if n := bouncedToday(); n != 0 {
		t.Errorf("bounced today after a sent message = %d, want 0", n)
	}
}
