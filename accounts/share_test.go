package accounts

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/proctest"
	"github.com/mailgate/mailgate/internal/redistest"
)

// The heartbeat lists the fetcher processes alive now with what each
// holds; one that stops beating drops out when its heartbeat runs out, one
// that leaves drops out at once.
func TestHeartbeat(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestStore(t, Options{})
	a, b, c := NewHolder("A"), NewHolder("B"), NewHolder("C")
	beat := func(me Holder, held int, ttl time.Duration) map[Holder]int {
		t.Helper()
		peers, err := s.Heartbeat(ctx, me, held, ttl)
		if err != nil {
			t.Fatal(err)
		}
		m := map[Holder]int{}
		for _, p := range peers {
			m[p.Holder] = p.Held
		}
		return m
	}
	beat(a, 3, time.Minute)
	beat(b, 2, 300*time.Millisecond)
	if got := beat(c, 0, time.Minute); len(got) != 3 || got[a] != 3 || got[b] != 2 || got[c] != 0 {
		t.Fatalf("peers = %v, want A 3, B 2, C 0", got)
	}
	time.Sleep(400 * time.Millisecond) // B stopped beating: its heartbeat runs out
	if got := beat(a, 5, time.Minute); len(got) != 2 || got[a] != 5 || got[c] != 0 {
		t.Errorf("after B's heartbeat ran out: peers = %v, want A 5, C 0", got)
	}
	if err := s.Leave(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got := beat(a, 5, time.Minute); len(got) != 1 || got[a] != 5 {
		t.Errorf("after C left: peers = %v, want A alone", got)
	}
	if _, err := s.Heartbeat(ctx, Holder{Host: "h"}, 0, time.Minute); err == nil {
		t.Error("a heartbeat without pid and token was accepted")
	}
}

// PeekLeases reads many leases without taking any, and says which the
// caller may take: free ones, its own, and those of a process on this
// host that is gone.
func TestPeekLeases(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestStore(t, Options{})
	me, other := NewHolder("me"), NewHolder("other")
	gone := Holder{Host: me.Host, PID: proctest.GonePID(t), Token: "x"}
	emails := []string{"free@example.com", "mine@example.com", "other@example.com", "gone@example.com"}
	mustLease(t, "mine", s, emails[1], me, time.Minute, true)
	mustLease(t, "other", s, emails[2], other, time.Minute, true)
	mustLease(t, "gone", s, emails[3], gone, time.Minute, true)
	for _, n := range []int{1, peekChunk + 1} { // one pipeline, and more
		list := emails
		for len(list) < n {
			list = append(list, "free@example.com")
		}
		ls, err := s.PeekLeases(ctx, list)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) != len(list) {
			t.Fatalf("%d leases for %d addresses", len(ls), len(list))
		}
		for i, want := range []bool{true, true, false, true} {
			if i >= len(ls) {
				break
			}
			if got := ls[i].Free(me); got != want {
				t.Errorf("%s: Free = %v (%+v), want %v", list[i], got, ls[i], want)
			}
		}
		if len(ls) > 2 && (ls[2].Holder != other || ls[2].Left <= 50*time.Second) {
			t.Errorf("other's lease = %+v, want held by %v for about a minute", ls[2], other)
		}
	}
}

// BenchmarkPeekLeases10000 is one look at 10,000 leases, half of them held:
// what a process below its share pays once per renewal period while
// leases move.
func BenchmarkPeekLeases10000(b *testing.B) {
	ctx := context.Background()
	rdb := redistest.Start(b).Client(b)
	s := New(rdb, Options{})
	me := NewHolder("me")
	emails := make([]string, 10000)
	for i := range emails {
		emails[i] = fmt.Sprintf("desk%05d@example.com", i)
		if i%2 == 0 {
			if _, err := s.AcquireLease(ctx, emails[i], me, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	for range b.N {
		if _, err := s.PeekLeases(ctx, emails); err != nil {
			b.Fatal(err)
		}
	}
}

// Fetchers lists the live processes, with what each holds and when its
// last heartbeat came, for the operator; it beats for nobody.
func TestFetchers(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestStore(t, Options{})
	a, b := NewHolder("A"), NewHolder("B")
	before := time.Now().Add(-time.Second)
	if _, err := s.Heartbeat(ctx, a, 3, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Heartbeat(ctx, b, 2, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	got, err := s.Fetchers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Holder != a || got[0].Held != 3 || got[1].Holder != b || got[1].Held != 2 {
		t.Fatalf("fetchers = %+v, want A holding 3, B holding 2", got)
	}
	for _, p := range got {
		if p.LastSeen.Before(before) || p.LastSeen.After(time.Now().Add(time.Second)) {
			t.Errorf("%s last seen %s, want about now", p.Holder.Process(), p.LastSeen)
		}
	}
	time.Sleep(400 * time.Millisecond) // B's heartbeat runs out
	if got, _ := s.Fetchers(ctx); len(got) != 1 || got[0].Holder != a {
		t.Errorf("after B's heartbeat ran out: fetchers = %+v, want A alone", got)
	}
	if err := s.Leave(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Fetchers(ctx); len(got) != 0 {
		t.Errorf("after A left: fetchers = %+v, want none", got)
	}
	// The next heartbeat drops the times of the processes gone.
	c := NewHolder("C")
	if _, err := s.Heartbeat(ctx, c, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if seen, _ := s.rdb.HKeys(ctx, s.seenKey()).Result(); len(seen) != 1 || seen[0] != c.String() {
		t.Errorf("heartbeat times kept = %v, want C's alone", seen)
	}
}
