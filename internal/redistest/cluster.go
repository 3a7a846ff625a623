package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/freeport"
)

// Cluster is a Redis Cluster on loopback: three masters with one replica
// each, made by `redis-cli --cluster create`, quick to fail over (a node
// is failing after one second without answering).
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts six nodes with extra config lines (e.g. "appendonly
// yes"), joins them into a cluster of three masters and three replicas,
// and waits until every node says the cluster is ok and every replica is
// in sync.
func StartCluster(t testing.TB, extra ...string) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redistest: redis-cli is not installed (apt-get install -y redis-tools): %v", err)
	}
	dir := t.TempDir()
	c := &Cluster{}
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			n.Kill()
		}
	})
	for range 6 {
		// The cluster bus listens on its own port; by default port+10000,
		// which a high free port may push beyond 65535.
		bus, err := freeport.Port()
		if err != nil {
			t.Fatal(err)
		}
		// Each node keeps its view of the cluster in nodes.conf in its
		// own directory.
		nd, err := os.MkdirTemp(dir, "node-")
		if err != nil {
			t.Fatal(err)
		}
		n, err := Run(nd, append([]string{
			"cluster-enabled yes",
			"cluster-port " + strconv.Itoa(bus),
			"cluster-node-timeout 1000",
		}, extra...)...)
		if err != nil {
			t.Fatalf("redistest: cluster node: %v", err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.Nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := poll(ctx, func() error { return c.healthy(ctx, nil) }); err != nil {
		t.Fatalf("redistest: cluster not ready: %v", err)
	}
	return c
}

// healthy checks that every running node except skip says cluster_state:ok
// and that the replicas among them are in sync.
func (c *Cluster) healthy(ctx context.Context, skip *Server) error {
	replicas := 0
	for _, n := range c.Nodes {
		if n == skip || !n.Running() {
			continue
		}
		rc := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		info, err := rc.ClusterInfo(ctx).Result()
		repl := rc.Info(ctx, "replication").Val()
		rc.Close()
		if err != nil || !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("node %s: cluster not ok (%v)", n.Addr, err)
		}
		if strings.Contains(repl, "role:slave") {
			replicas++
			if !strings.Contains(repl, "master_link_status:up") {
				return fmt.Errorf("replica %s not in sync", n.Addr)
			}
		}
	}
	if skip == nil && replicas != 3 {
		return fmt.Errorf("%d replicas in sync, want 3", replicas)
	}
	return nil
}

// Addrs returns every node's address, the seeds a client starts from.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Client returns a cluster client, closed at test end.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// MasterOf returns the node that serves key's hash slot now, as the first
// running node that answers CLUSTER SLOTS says.
func (c *Cluster) MasterOf(ctx context.Context, key string) (*Server, error) {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		rc := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		slot, err := rc.ClusterKeySlot(ctx, key).Result()
		var slots []redis.ClusterSlot
		if err == nil {
			slots, err = rc.ClusterSlots(ctx).Result()
		}
		rc.Close()
		if err != nil {
			continue
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				for _, m := range c.Nodes {
					if m.Addr == s.Nodes[0].Addr {
						return m, nil
					}
				}
				return nil, fmt.Errorf("slot %d is served by %s, not one of ours", slot, s.Nodes[0].Addr)
			}
		}
		return nil, fmt.Errorf("no node serves the slot of %q", key)
	}
	return nil, fmt.Errorf("no cluster node answers")
}

// KillMasterOf kills (-9) the master serving key's slot and returns it.
func (c *Cluster) KillMasterOf(t testing.TB, key string) *Server {
	t.Helper()
	m, err := c.MasterOf(context.Background(), key)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	m.Kill()
	return m
}

// WaitFailover waits until key's slot is served by a master other than
// old and every other node says the cluster is ok, and returns when it saw
// that.
func (c *Cluster) WaitFailover(t testing.TB, key string, old *Server, timeout time.Duration) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := poll(ctx, func() error {
		m, err := c.MasterOf(ctx, key)
		if err != nil {
			return err
		}
		if m == old {
			return fmt.Errorf("the slot of %q is still assigned to %s", key, old.Addr)
		}
		if err := isMaster(ctx, m.Addr); err != nil {
			return err
		}
		return c.healthy(ctx, old)
	})
	if err != nil {
		t.Fatalf("redistest: no failover within %s: %v", timeout, err)
	}
	return time.Now()
}
