// Package redistest starts a real redis-server for tests: one private
// process per call, on a free loopback port, in a temporary directory, and
// stopped when the test ends.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running redis-server.
type Server struct {
	Addr   string // host:port
	URL    string // redis://host:port/0
	Socket string // the same server's unix socket
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
}

// Start runs a fresh redis-server for t, with extra config lines such as
// "appendonly yes". It fails the test with a clear message when the binary
// is missing, so a newcomer knows what to install.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not installed: the tests need a real Redis (apt-get install -y redis-server, or run ./scripts/test which installs it)")
	}
	dir := t.TempDir()
	var lastErr error
	// The port is picked by binding :0 and releasing it; another process can
	// take it in between, so try a few times.
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s, err := start(bin, dir, port, extra)
		if err == nil {
			t.Cleanup(s.stop)
			return s
		}
		lastErr = err
	}
	t.Fatalf("redistest: could not start redis-server: %v", lastErr)
	return nil
}

func start(bin, dir string, port int, extra []string) (*Server, error) {
	conf := []string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(port),
		"dir " + dir,
		`save ""`,
		"appendonly no",
		"protected-mode yes",
		"unixsocket " + filepath.Join(dir, fmt.Sprintf("redis-%d.sock", port)),
		"unixsocketperm 700",
	}
	conf = append(conf, extra...)
	confPath := filepath.Join(dir, fmt.Sprintf("redis-%d.conf", port))
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, confPath)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// Keep draining the log so redis-server never blocks on a full pipe.
	logLines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case logLines <- sc.Text():
			default:
			}
		}
	}()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{Addr: addr, URL: "redis://" + addr + "/0", Socket: filepath.Join(dir, fmt.Sprintf("redis-%d.sock", port)),
		cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		err := c.Ping(context.Background()).Err()
		c.Close()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.done:
			deadline = time.Now() // exited: stop waiting
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.stop()
	var log []string
	for len(logLines) > 0 {
		log = append(log, <-logLines)
	}
	return nil, fmt.Errorf("redis-server on %s did not answer: %s", addr, strings.Join(log, " | "))
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

// Kill stops the server at once (SIGKILL), to test behaviour when Redis dies.
func (s *Server) Kill() { s.stop() }

func (s *Server) stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
