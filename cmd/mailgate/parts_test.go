package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestPartFailureStopsTheOthers: when one part fails, every other part's
// context ends at once and the failure names the part.
func TestPartFailureStopsTheOthers(t *testing.T) {
	p := newParts(context.Background())
	stopped := make(chan string, 2)
	for _, name := range []string{"fetcher", "relay"} {
		p.start(name, func(ctx context.Context) error {
			<-ctx.Done()
			stopped <- name
			return nil
		})
	}
	p.start("smtp", func(context.Context) error { return errors.New("accept: use of closed network connection") })
	for range 2 {
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			t.Fatal("a part failed, but the others were not told to stop")
		}
	}
	err := p.failure()
	if err == nil || err.Error() != "smtp stopped: accept: use of closed network connection" {
		t.Fatalf("failure() = %v, want the smtp part named with its error", err)
	}
	if err := p.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestPartReturningIsAFailure: a part that returns nil on its own (a
// listener loop that ended) leaves the daemon without it: a failure too.
func TestPartReturningIsAFailure(t *testing.T) {
	p := newParts(context.Background())
	p.start("http", func(context.Context) error { return nil })
	<-p.ctx.Done()
	if err := p.failure(); err == nil || !strings.Contains(err.Error(), "http stopped: returned on its own") {
		t.Fatalf("failure() = %v, want http named", err)
	}
}

// TestStopIsNoFailure: parts that return errors because they were told to
// stop (a closed listener after a signal) are no failure: serve exits 0.
func TestStopIsNoFailure(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	p := newParts(ctx)
	p.start("smtp", func(ctx context.Context) error {
		<-ctx.Done()
		return errors.New("use of closed network connection")
	})
	stop()
	if err := p.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.failure(); err != nil {
		t.Fatalf("failure() after a stop = %v, want nil", err)
	}
}

// TestWaitNamesStuckParts: a part that ignores its context does not hold
// the daemon past the grace; it is named.
func TestWaitNamesStuckParts(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	p := newParts(ctx)
	hang := make(chan struct{})
	defer close(hang)
	p.start("fetcher", func(context.Context) error { <-hang; return nil })
	p.start("relay", func(ctx context.Context) error { <-ctx.Done(); return nil })
	stop()
	grace, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.wait(grace)
	if err == nil || !strings.Contains(err.Error(), "fetcher") || strings.Contains(err.Error(), "relay") {
		t.Fatalf("wait = %v, want the stuck fetcher named, not the relay that stopped", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("wait took %s with a grace of 100ms", took)
	}
}
