// Package redistest starts a real redis-server for tests: one private
// process per call, on a free loopback port, in a temporary directory, and
// stopped when the test ends. Tests break it on purpose with Kill, Restart
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
	conf   string // its configuration file, kept for Restart
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
		s, err := start(bin, dir, port, extra)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("could not start redis-server: %w", lastErr)
}

func start(bin, dir string, port int, extra []string) (*Server, error) {
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
	s := &Server{Addr: addr, URL: "redis://" + addr + "/0", Socket: name + ".sock", bin: bin, conf: name + ".conf"}
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
	cmd := exec.Command(s.bin, s.conf)
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
