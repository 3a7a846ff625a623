// Package redistest starts real Redis for tests: a redis-server, a
// Sentinel, or a Cluster of them; private processes on free loopback ports,
// in temporary directories, stopped when the test ends. Tests break it on purpose with Kill, Restart
// (on the same port, with its data if it persists any), Pause and Resume.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/freeport"
)

// Server is a running redis-server.
type Server struct {
	Addr   string // host:port
	URL    string // redis://host:port/0
	Socket string // the same server's unix socket
	bin    string
	conf   string   // its configuration file, kept for Restart
	args   []string // after the configuration file: --sentinel
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
}

// Start runs a fresh redis-server for t, with extra config lines such as
// "appendonly yes". It fails the test with a clear message when the binary
// is missing, so a newcomer knows what to install.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	s, err := Run(t.TempDir(), extra...)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(s.Kill)
	return s
}

// Run is Start for programs without a testing.TB (e2e/cmd/rssbench): it
// keeps the server's files and log in dir, and the caller stops it with
// Kill.
func Run(dir string, extra ...string) (*Server, error) {
	return run(dir, extra, nil)
}

func run(dir string, extra, args []string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is not installed: the tests need a real Redis (apt-get install -y redis-server, or run ./scripts/test which installs it)")
	}
	var lastErr error
	// The port is picked by binding :0 and releasing it; another process can
	// take it in between, so try a few times.
	for range 5 {
		port, err := freeport.Port()
		if err != nil {
			return nil, err
		}
		s, err := start(bin, dir, port, extra, args)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("could not start redis-server: %w", lastErr)
}

func start(bin, dir string, port int, extra, args []string) (*Server, error) {
	name := filepath.Join(dir, fmt.Sprintf("redis-%d", port))
	conf := []string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(port),
		"dir " + dir,
		`save ""`,
		"appendonly no",
		"protected-mode yes",
		"unixsocket " + name + ".sock",
		"unixsocketperm 700",
	}
	conf = append(conf, extra...)
	if err := os.WriteFile(name+".conf", []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{Addr: addr, URL: "redis://" + addr + "/0", Socket: name + ".sock", bin: bin, conf: name + ".conf", args: args}
	if err := s.launch(); err != nil {
		return nil, err
	}
	return s, nil
}

// launch runs the server's process on its configuration and waits until
// it answers.
func (s *Server) launch() error {
	name := strings.TrimSuffix(s.conf, ".conf")
	logf, err := os.OpenFile(name+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, append([]string{s.conf}, s.args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
		err := c.Ping(context.Background()).Err()
		c.Close()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			deadline = time.Now() // exited: stop waiting
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.Kill()
	log, _ := os.ReadFile(name + ".log")
	return fmt.Errorf("redis-server on %s did not answer: %s", s.Addr, strings.ReplaceAll(strings.TrimSpace(string(log)), "\n", " | "))
}

// Client returns a go-redis client for the server, closed at test end.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// UnixClient returns a go-redis client over the unix socket, closed at
// test end.
func (s *Server) UnixClient(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: s.Socket})
	t.Cleanup(func() { c.Close() })
	return c
}

// Kill stops the server at once (SIGKILL) and waits for it to exit, to
// test behaviour when Redis dies; Start's cleanup calls it too.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	_ = cmd.Process.Kill()
	<-done
}

// Restart kills the server (SIGKILL, as a crash would) and starts it again
// on the same port and files: it comes back with what it had persisted
// (its append-only file with "appendonly yes"), or empty without.
func (s *Server) Restart() error {
	s.Kill()
	return s.launch()
}

// Pause freezes the server (SIGSTOP): connections stay open and commands
// wait unanswered, as with a Redis stuck on a slow disk or a VM paused.
// Resume ends it.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume thaws a paused server (SIGCONT): it then runs what it received
// meanwhile.
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Signal(sig)
}

// StartSentinel runs a Sentinel (redis-server --sentinel) that watches
// master under the name master, alone: a quorum of one.
func StartSentinel(t testing.TB, master *Server, name string) *Server {
	t.Helper()
	host, port, _ := net.SplitHostPort(master.Addr)
	s, err := run(t.TempDir(), []string{fmt.Sprintf("sentinel monitor %s %s %s 1", name, host, port)}, []string{"--sentinel"})
	if err != nil {
		t.Fatalf("redistest: sentinel: %v", err)
	}
	t.Cleanup(s.Kill)
	return s
}

// Cluster is a running Redis Cluster of masters without replicas.
type Cluster struct {
	Nodes []*Server
	Addrs []string // the nodes' host:port, seeds for a ClusterClient
}

// StartCluster runs a Redis Cluster of n masters (1, or 3 and more, as
// redis-cli --cluster create wants) sharing the 16384 slots, and waits
// until every node says the cluster is ok. Keys then really live on
// different nodes: a client that ignores MOVED fails on most of them.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n == 2 {
		t.Fatal("redistest: a cluster has 1 or at least 3 masters")
	}
	c := &Cluster{}
	for range n {
		s := Start(t, "cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 2000")
		c.Nodes, c.Addrs = append(c.Nodes, s), append(c.Addrs, s.Addr)
	}
	ctx := context.Background()
	if n == 1 {
		if err := c.Nodes[0].Client(t).Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383").Err(); err != nil {
			t.Fatalf("redistest: cluster: %v", err)
		}
	} else {
		cli, err := exec.LookPath("redis-cli")
		if err != nil {
			t.Fatal("redistest: redis-cli is not installed (it comes with redis-server; apt-get install -y redis-tools)")
		}
		args := append([]string{"--cluster", "create"}, c.Addrs...)
		if out, err := exec.Command(cli, append(args, "--cluster-yes")...).CombinedOutput(); err != nil {
			t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range c.Nodes {
		rdb := s.Client(t)
		for !strings.Contains(rdb.ClusterInfo(ctx).Val(), "cluster_state:ok") {
			if time.Now().After(deadline) {
				t.Fatalf("redistest: the cluster on %s did not become ok", strings.Join(c.Addrs, ","))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}
