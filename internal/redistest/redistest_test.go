package redistest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A kill -9 and restart keeps what an "appendfsync always" Redis
// acknowledged; a restart empty keeps nothing; a paused server answers
// nothing until resumed.
func TestRestartPause(t *testing.T) {
	ctx := context.Background()
	s := Start(t, "appendonly yes", "appendfsync always")
	c := s.Client(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	must(t, s.Restart())
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("after kill -9 and restart: GET k = %q, %v; want v", got, err)
	}

	must(t, s.Pause())
	quick := redis.NewClient(&redis.Options{Addr: s.Addr, ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer quick.Close()
	if err := quick.Get(ctx, "k").Err(); err == nil {
		t.Fatal("a paused server answered")
	}
	must(t, s.Resume())
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("after resume: GET k = %q, %v; want v", got, err)
	}

	must(t, s.RestartEmpty())
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("after a restart empty: GET k = %v; want nothing", err)
	}
}

// integration skips t unless MG_INTEGRATION=1: the Sentinel and Cluster
// tests take seconds each.
func integration(t *testing.T) {
	if os.Getenv("MG_INTEGRATION") != "1" {
		t.Skip("set MG_INTEGRATION=1 to start Sentinel and Cluster sets")
	}
}

func TestSentinelFailover(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s := StartSentinel(t, "appendonly yes", "appendfsync always")
	c := s.Client(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Let the write reach the replica before the master dies.
	if err := c.Do(ctx, "WAIT", 1, 1000).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	old := s.KillMaster(t)
	s.WaitFailover(t, old, 20*time.Second)
	t.Logf("sentinel failover took %s", time.Since(start).Round(time.Millisecond))
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("after failover: GET k = %q, %v; want v", got, err)
	}
}

func TestClusterFailover(t *testing.T) {
	integration(t)
	ctx := context.Background()
	cl := StartCluster(t, "appendonly yes", "appendfsync always")
	c := cl.Client(t)
	const key = "{mailgate}:k"
	if err := c.Set(ctx, key, "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	m, err := cl.MasterOf(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := redis.NewClient(&redis.Options{Addr: m.Addr}).Do(ctx, "WAIT", 1, 1000).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	old := cl.KillMasterOf(t, key)
	cl.WaitFailover(t, key, old, 20*time.Second)
	t.Logf("cluster failover took %s", time.Since(start).Round(time.Millisecond))
	// go-redis reads the new layout on a MOVED, or every few seconds;
	// a refused connection to the dead node tells it nothing.
	c.ReloadState(ctx)
	if got, err := c.Get(ctx, key).Result(); err != nil || got != "v" {
		t.Fatalf("after failover: GET %s = %q, %v; want v", key, got, err)
	}
}

// must fails the test on err, for the break-Redis helpers that return
// errors so that goroutines may call them too.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
