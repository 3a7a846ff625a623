package smtprelay

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/redistest"
)

// TestAcceptInOneRoundTrip: once Redis's clock has been read (the first
// message, stored then confirmed), a message is stored and confirmed in
// one round trip, and is deliverable once.
func TestAcceptInOneRoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	q := NewQueue(rdb, QueueOptions{})
	meter := newBenchMeter(t, rdb)
	ctx, cancel := context.WithTimeout(context.Background(), q.AcceptTimeout())
	defer cancel()
	q.EnsureGroup(ctx)
	newMsg := func() *Message {
		return &Message{From: "support@acme.test", To: []string{"alice@customer.test"}, Data: []byte("Subject: hi\r\n\r\nbody\r\n")}
	}
	first := newMsg()
	if err := q.Accept(ctx, first); err != nil {
		t.Fatal(err)
	}
	before := meter.trips.Load()
	m := newMsg()
	if err := q.Accept(ctx, m); err != nil {
		t.Fatal(err)
	}
	if n := meter.trips.Load() - before; n != 1 {
		t.Errorf("second message took %d round trips, want 1", n)
	}
	got, err := q.Next(ctx, "w", 10, time.Second)
	if err != nil || len(got) != 2 || got[1].ID != m.ID || got[1].State != StateQueued {
		t.Fatalf("Next = %+v, %v; want both messages, queued", got, err)
	}
	if n, _ := rdb.ZCard(ctx, q.tentative()).Result(); n != 0 {
		t.Errorf("%d tentative messages left after confirmation", n)
	}
}

// TestLateOneTripConfirmationTakesNoEffect: a confirmation sent with its
// store that Redis runs after its deadline (as after waiting in a frozen
// Redis while the client was told 451) leaves the copy tentative: never
// delivered, and dropped once its accept time is over.
func TestLateOneTripConfirmationTakesNoEffect(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	q := NewQueue(rdb, QueueOptions{AcceptTimeout: 400 * time.Millisecond})
	ctx := context.Background()
	q.EnsureGroup(ctx)
	warm := &Message{From: "support@acme.test", To: []string{"alice@customer.test"}, Data: []byte("Subject: hi\r\n\r\nbody\r\n")}
	if err := q.Accept(ctx, warm); err != nil {
		t.Fatal(err)
	}
	q.Next(ctx, "w", 10, time.Second)
	// As if the reading of Redis's clock were a second older than it is:
	// the deadline set from it has passed when Redis runs the
	// confirmation.
	q.mu.Lock()
	q.clock.redis -= 1000
	q.mu.Unlock()
	m := &Message{From: "support@acme.test", To: []string{"bob@customer.test"}, Data: []byte("Subject: late\r\n\r\nbody\r\n")}
	if err := q.Accept(ctx, m); !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("late Accept = %v, want ErrNotConfirmed", err)
	}
	if got, _ := q.Next(ctx, "w2", 1, 10*time.Millisecond); len(got) != 0 {
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
