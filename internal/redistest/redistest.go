// Package redistest starts real Redis processes for tests: a standalone
// redis-server, a Sentinel set (sentinel.go) or a Cluster (cluster.go),
// each process on a free loopback port, in a temporary directory, and
// stopped when the test ends. A server can be killed (-9), restarted on
// the same port with its data or empty, and frozen (SIGSTOP), so that tests
// can break Redis on purpose.
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

// Server is a running redis-server (or a sentinel).
type Server struct {
	Addr   string // host:port
	URL    string // redis://host:port/0
	Socket string // the same server's unix socket
	Port   int

	bin  string
	dir  string
	name string     // path prefix of its .conf and .log
	args []string   // after the config file, e.g. --sentinel
	mu   sync.Mutex // cmd and done change on restart, maybe from another goroutine
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
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
	return run(dir, nil, extra)
}

func run(dir string, args, extra []string) (*Server, error) {
	bin, err := serverBinary()
	if err != nil {
		return nil, err
	}
	var lastErr error
	// The port is picked by binding :0 and releasing it; another process can
	// take it in between, so try a few times.
	for range 5 {
		port, err := freeport.Port()
		if err != nil {
			return nil, err
		}
		s := &Server{bin: bin, dir: dir, Port: port, args: args}
		if err := s.configure(extra); err != nil {
			return nil, err
		}
		if err = s.start(); err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("could not start redis-server: %w", lastErr)
}

func serverBinary() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("redis-server is not installed: the tests need a real Redis (apt-get install -y redis-server, or run ./scripts/test which installs it)")
	}
	return bin, nil
}

// configure writes the server's config file. Its data files are named
// after its port, so that several servers may share dir.
func (s *Server) configure(extra []string) error {
	port := strconv.Itoa(s.Port)
	s.name = filepath.Join(s.dir, "redis-"+port)
	s.Addr = net.JoinHostPort("127.0.0.1", port)
	s.URL = "redis://" + s.Addr + "/0"
	s.Socket = s.name + ".sock"
	conf := []string{
		"bind 127.0.0.1",
		"port " + port,
		"dir " + s.dir,
		`save ""`,
		"appendonly no",
		"appenddirname appendonly-" + port,
		"dbfilename dump-" + port + ".rdb",
		"protected-mode yes",
		"unixsocket " + s.Socket,
		"unixsocketperm 700",
	}
	if len(s.args) > 0 { // a sentinel: no data, no socket of its own
		conf = []string{"bind 127.0.0.1", "port " + port, "dir " + s.dir, "protected-mode no"}
		s.Socket = ""
	}
	conf = append(conf, extra...)
	return os.WriteFile(s.name+".conf", []byte(strings.Join(conf, "\n")+"\n"), 0o600)
}

// start runs the process on the config file written by configure and waits
// until it answers PING.
func (s *Server) start() error {
	logf, err := os.OpenFile(s.name+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, append([]string{s.name + ".conf"}, s.args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Stop the server with the test binary, even one killed without its
	// cleanups (go test's timeout).
	cmd.SysProcAttr = sysProcAttr()
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
		if err == nil { // while it replays its AOF, Redis answers LOADING
			return nil
		}
		select {
		case <-done:
			deadline = time.Now() // exited: stop waiting
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.Kill()
	return fmt.Errorf("redis-server on %s did not answer: %s", s.Addr, strings.ReplaceAll(s.LogTail(10), "\n", " | "))
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
// test behaviour when Redis dies; Start's cleanup calls it too. Killing a
// server that is not running does nothing.
func (s *Server) Kill() {
	cmd, done := s.proc()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

func (s *Server) proc() (*exec.Cmd, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd, s.done
}

// Running reports whether the process is up (it may be frozen).
func (s *Server) Running() bool {
	_, done := s.proc()
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Restart kills the server (-9) if it runs and starts it again on the same
// port and files: with "appendonly yes" it comes back with every write it
// acknowledged (all of them with "appendfsync always"), as after a crash.
// It returns an error rather than failing the test, so that a goroutine
// may restart the server while the test watches.
func (s *Server) Restart() error {
	s.Kill()
	if err := s.start(); err != nil {
		return fmt.Errorf("redistest: restart %s: %w", s.Addr, err)
	}
	return nil
}

// RestartEmpty kills the server (-9) and starts it again on the same port
// without its data, as a Redis without persistence comes back (or one
// whose disk was lost).
func (s *Server) RestartEmpty() error {
	s.Kill()
	port := strconv.Itoa(s.Port)
	for _, f := range []string{"appendonly-" + port, "dump-" + port + ".rdb"} {
		if err := os.RemoveAll(filepath.Join(s.dir, f)); err != nil {
			return fmt.Errorf("redistest: %w", err)
		}
	}
	if err := s.start(); err != nil {
		return fmt.Errorf("redistest: restart %s empty: %w", s.Addr, err)
	}
	return nil
}

// Pause freezes the server (SIGSTOP): connections stay open and nothing is
// answered, as when a host stalls. Resume thaws it.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume thaws a server frozen by Pause (SIGCONT).
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	cmd, _ := s.proc()
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("redistest: %s %s: %w", sig, s.Addr, err)
	}
	return nil
}

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	b, _ := os.ReadFile(s.name + ".log")
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
