package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the sentinels of StartSentinel monitor.
const SentinelMaster = "mailgate"

// Sentinel is a Redis Sentinel set on loopback: a master, a replica, and
// three sentinels watching them with a quorum of two, quick to act (a
// master is down after one second without answering).
type Sentinel struct {
	MasterName string
	Nodes      []*Server // the data nodes: the first master, then its replica
	Sentinels  []*Server
}

// StartSentinel starts a master with extra config lines (e.g. "appendonly
// yes"), a replica of it with the same lines, and three sentinels, and
// waits until the sentinels know the replica and each other, so that a
// failover can happen as soon as the test kills the master.
func StartSentinel(t testing.TB, extra ...string) *Sentinel {
	t.Helper()
	dir := t.TempDir()
	s := &Sentinel{MasterName: SentinelMaster}
	t.Cleanup(s.kill)
	master, err := Run(dir, extra...)
	if err != nil {
		t.Fatalf("redistest: sentinel master: %v", err)
	}
	s.Nodes = append(s.Nodes, master)
	replica, err := Run(dir, append(extra, "replicaof 127.0.0.1 "+strconv.Itoa(master.Port))...)
	if err != nil {
		t.Fatalf("redistest: sentinel replica: %v", err)
	}
	s.Nodes = append(s.Nodes, replica)
	for range 3 {
		sn, err := run(dir, []string{"--sentinel"}, []string{
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", s.MasterName, master.Port),
			"sentinel down-after-milliseconds " + s.MasterName + " 1000",
			"sentinel failover-timeout " + s.MasterName + " 5000",
			"sentinel parallel-syncs " + s.MasterName + " 1",
		})
		if err != nil {
			t.Fatalf("redistest: sentinel: %v", err)
		}
		s.Sentinels = append(s.Sentinels, sn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.waitReady(ctx, replica); err != nil {
		t.Fatalf("redistest: sentinel set not ready: %v", err)
	}
	return s
}

func (s *Sentinel) kill() {
	for _, n := range append(s.Sentinels, s.Nodes...) {
		n.Kill()
	}
}

// waitReady waits until the replica is in sync and every sentinel sees the
// replica and the two other sentinels.
func (s *Sentinel) waitReady(ctx context.Context, replica *Server) error {
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer rc.Close()
	return poll(ctx, func() error {
		if info := rc.Info(ctx, "replication").Val(); !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica %s not in sync with its master", replica.Addr)
		}
		for _, sn := range s.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr})
			reps, err1 := c.Replicas(ctx, s.MasterName).Result()
			others, err2 := c.Sentinels(ctx, s.MasterName).Result()
			c.Close()
			if err1 != nil || err2 != nil || len(reps) != 1 || len(others) != 2 {
				return fmt.Errorf("sentinel %s sees %d replicas and %d other sentinels (%v, %v)", sn.Addr, len(reps), len(others), err1, err2)
			}
		}
		return nil
	})
}

// Addrs returns the sentinels' addresses.
func (s *Sentinel) Addrs() []string {
	out := make([]string, len(s.Sentinels))
	for i, sn := range s.Sentinels {
		out[i] = sn.Addr
	}
	return out
}

// Client returns a go-redis client that follows the master through
// failovers, closed at test end.
func (s *Sentinel) Client(t testing.TB) *redis.Client {
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.Addrs()})
	t.Cleanup(func() { c.Close() })
	return c
}

// MasterAddr returns the master's address as a majority of the sentinels
// that answer report it.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	votes := map[string]int{}
	for _, sn := range s.Sentinels {
		if !sn.Running() {
			continue
		}
		c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr})
		a, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
		c.Close()
		if err == nil && len(a) == 2 {
			votes[a[0]+":"+a[1]]++
		}
	}
	for addr, n := range votes {
		if n >= 2 {
			return addr, nil
		}
	}
	return "", fmt.Errorf("the sentinels do not agree on a master: %v", votes)
}

// Master returns the data node that is the master now.
func (s *Sentinel) Master(ctx context.Context) (*Server, error) {
	addr, err := s.MasterAddr(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range s.Nodes {
		if n.Addr == addr {
			return n, nil
		}
	}
	return nil, fmt.Errorf("the sentinels name %s as master, which is not one of ours", addr)
}

// KillMaster kills the current master (-9) and returns it.
func (s *Sentinel) KillMaster(t testing.TB) *Server {
	t.Helper()
	m, err := s.Master(context.Background())
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	m.Kill()
	return m
}

// WaitFailover waits until the sentinels name a master other than old and
// that node says it is a master, and returns when it saw that.
func (s *Sentinel) WaitFailover(t testing.TB, old *Server, timeout time.Duration) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := poll(ctx, func() error {
		addr, err := s.MasterAddr(ctx)
		if err != nil {
			return err
		}
		if addr == old.Addr {
			return fmt.Errorf("the sentinels still name %s", addr)
		}
		return isMaster(ctx, addr)
	})
	if err != nil {
		t.Fatalf("redistest: no failover within %s: %v", timeout, err)
	}
	return time.Now()
}

// isMaster checks that the node at addr answers ROLE with "master".
func isMaster(ctx context.Context, addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	role, err := c.Do(ctx, "ROLE").Slice()
	if err != nil {
		return fmt.Errorf("ROLE on %s: %w", addr, err)
	}
	if len(role) == 0 || role[0] != "master" {
		return fmt.Errorf("%s is not a master yet: ROLE %v", addr, role)
	}
	return nil
}

// poll calls f every 50ms until it returns nil, or returns its last error
// when ctx ends.
func poll(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WatchMaster runs one Sentinel (quorum of one) that watches master under
// name: enough for a client to find the master through Sentinel, not for
// a failover (StartSentinel's set is for that).
func WatchMaster(t testing.TB, master *Server, name string) *Server {
	t.Helper()
	s, err := run(t.TempDir(), []string{"--sentinel"}, []string{fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1", name, master.Port)})
	if err != nil {
		t.Fatalf("redistest: sentinel: %v", err)
	}
	t.Cleanup(s.Kill)
	return s
}
