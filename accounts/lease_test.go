package accounts

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/proctest"
	"github.com/mailgate/mailgate/internal/redistest"
)

// mustLease calls AcquireLease and fails the test unless it returns no
// error and the lease is (mine) or is not the caller's.
func mustLease(t *testing.T, what string, s *Store, email string, me Holder, ttl time.Duration, mine bool) Lease {
	t.Helper()
	l, err := s.AcquireLease(context.Background(), email, me, ttl)
	if err != nil || l.Mine != mine {
		t.Fatalf("%s = %+v, %v; want mine=%v", what, l, err, mine)
	}
	return l
}

func TestLease(t *testing.T) {
	ctx := context.Background()
	s, _, clk := newTestStore(t, Options{})
	const e = "alice@example.com"
	a, b, c := NewHolder("A"), NewHolder("B"), NewHolder("C")

	mustLease(t, "A acquires", s, e, a, time.Minute, true)
	got := mustLease(t, "B acquires while A holds", s, e, b, time.Minute, false)
	if until := clk.Now().Add(time.Minute); got.Holder != a || got.Liveness != Alive || got.Until.After(until) || got.Until.Before(until.Add(-time.Second)) {
		t.Errorf("B sees %+v, want A (alive) until %s", got, until)
	}
	if err := s.ReleaseLease(ctx, e, b); err != nil {
		t.Fatal(err)
	}
	mustLease(t, "A renews after B's release attempt", s, e, a, 200*time.Millisecond, true)

	// A stops renewing: its lease expires and B takes over.
	time.Sleep(300 * time.Millisecond)
	mustLease(t, "B acquires after expiry", s, e, b, time.Minute, true)
	got = mustLease(t, "A renews after takeover", s, e, a, time.Minute, false)
	if got.Holder != b {
		t.Errorf("A sees the lease held by %v, want B", got.Holder)
	}
	_ = s.ReleaseLease(ctx, e, a)
	mustLease(t, "C acquires after A's stale release", s, e, c, time.Minute, false)
	_ = s.ReleaseLease(ctx, e, b)
	mustLease(t, "C acquires after B's release", s, e, c, time.Minute, true)

	if _, err := s.AcquireLease(ctx, e, Holder{Host: "h", PID: 1}, time.Minute); err == nil {
		t.Error("AcquireLease without a token succeeded")
	}
}

// A process recognises its own lease: after a release that failed (the
// lease stayed), and after Redis restarted without it (the renewal takes it
// again), it goes on at once instead of waiting for the expiry.
func TestLeaseOwnerRecognisesItsOwn(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s := New(srv.Client(t), Options{})
	const e = "alice@example.com"
	me := NewHolder("")
	mustLease(t, "acquire", s, e, me, time.Minute, true)
	mustLease(t, "acquire again, as after a failed release", s, e, me, time.Minute, true)

	if err := srv.Restart(); err != nil { // empty: no persistence
		t.Fatal(err)
	}
	var got Lease
	var err error
	for range 50 { // the client reconnects
		if got, err = s.AcquireLease(ctx, e, me, time.Minute); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || !got.Mine {
		t.Fatalf("renew after Redis restarted empty = %+v, %v; want it taken again", got, err)
	}
	other := NewHolder("")
	if got := mustLease(t, "another fetcher after the renewal", s, e, other, time.Minute, false); got.Holder != me {
		t.Errorf("lease held by %v, want %v", got.Holder, me)
	}
}

// A lease whose holder ran on this host and is gone is taken over at once;
// one whose holder lives, or runs on another host, is respected.
func TestLeaseDeadHolderTakenOver(t *testing.T) {
	ctx := context.Background()
	s, rdb, _ := newTestStore(t, Options{})
	me := NewHolder("")

	dead := Holder{Host: me.Host, PID: proctest.GonePID(t), Token: "old"}
	mustLease(t, "the old process acquires", s, "a@example.com", dead, time.Minute, true)
	got := mustLease(t, "a new process acquires", s, "a@example.com", me, time.Minute, true)
	if got.TookOver != dead {
		t.Errorf("TookOver = %v, want %v", got.TookOver, dead)
	}

	// A value written before leases had tokens (host:pid) is taken over too.
	if err := rdb.Set(ctx, "mailgate:lease:b@example.com", dead.Process(), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	got = mustLease(t, "acquire over an old-style value", s, "b@example.com", me, time.Minute, true)
	if got.TookOver.Process() != dead.Process() {
		t.Errorf("TookOver = %v, want %s", got.TookOver, dead.Process())
	}

	for _, tc := range []struct {
		name   string
		holder Holder
		want   Liveness
	}{
		{"a live process on this host", Holder{Host: me.Host, PID: proctest.LivePID(t), Token: "x"}, Alive},
		{"another fetcher of this process", NewHolder("sibling"), Alive},
		{"a gone pid on another host", Holder{Host: "elsewhere.invalid", PID: proctest.GonePID(t), Token: "x"}, Unknown},
	} {
		email := "c@example.com"
		_ = s.ReleaseLease(ctx, email, me)
		mustLease(t, tc.name+" acquires", s, email, tc.holder, time.Minute, true)
		got := mustLease(t, "acquire from "+tc.name, s, email, me, time.Minute, false)
		if got.Holder != tc.holder || got.Liveness != tc.want || got.Until.IsZero() {
			t.Errorf("%s: lease seen as %+v, want held by %v (%v) with an expiry", tc.name, got, tc.holder, tc.want)
		}
		_ = s.ReleaseLease(ctx, email, tc.holder)
	}
}

func TestHolderString(t *testing.T) {
	h := Holder{Host: "mx1", PID: 42, Token: "ab:cd"}
	if got := parseHolder(h.String()); got != h {
		t.Errorf("parseHolder(%q) = %+v", h.String(), got)
	}
	if h.Process() != "mx1:42" {
		t.Errorf("Process() = %q", h.Process())
	}
	if got := parseHolder("daemon"); got != (Holder{Host: "daemon"}) || got.Liveness() != Unknown {
		t.Errorf("parseHolder(daemon) = %+v (%v)", got, got.Liveness())
	}
}

func TestLeaseConcurrent(t *testing.T) {
	s, _, _ := newTestStore(t, Options{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	winners := 0
	for i := range 20 {
		wg.Go(func() {
			got, err := s.AcquireLease(context.Background(), "alice@example.com", NewHolder(string(rune('a'+i))), time.Minute)
			if err != nil {
				t.Error(err)
			}
			if got.Mine {
				mu.Lock()
				winners++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if winners != 1 {
		t.Fatalf("%d holders got the lease, want 1", winners)
	}
}
