// Package dovecottest starts a real Dovecot IMAP server for tests: one
// private `dovecot -F` per call, listening on a free loopback port, with its
// own config, sockets, state and mailboxes in a temporary directory, and
// stopped when the test ends.
//
// Users log in with the password Password (PLAIN, LOGIN) or, when
// Options.TokeninfoURL is set, with an OAuth2 access token (XOAUTH2,
// OAUTHBEARER) that Dovecot's oauth2 passdb checks against that URL, e.g.
// internal/fakeoauth's tokeninfo endpoint. The in-process fake Gmail
// (internal/fakegmail) runs on go-imap's server; this one is somebody else's
// implementation, so it catches what ours forgives.
//
// The tests that use it are opt-in: Start skips unless MG_INTEGRATION=1
// is set (scripts/test sets it after installing dovecot-imapd).
package dovecottest

import (
	"bytes"
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

	"github.com/mailgate/mailgate/internal/freeport"
)

// Password is every user's password for PLAIN and LOGIN.
const Password = "secret"

// EnvSwitch is the environment variable that turns the Dovecot tests on.
const EnvSwitch = "MG_INTEGRATION"

// Options configures a Server.
type Options struct {
	// Users are the mailbox owners, as full email addresses. Each gets an
	// empty INBOX (created on first login) and the password Password.
	Users []string

	// TokeninfoURL, if set, enables XOAUTH2 and OAUTHBEARER: Dovecot
	// appends the client's access token to it and GETs the result, like
	// Google's https://oauth2.googleapis.com/tokeninfo?access_token= (use
	// fakeoauth.Server.TokeninfoURL). The "email" in the answer must name
	// the user logging in. Empty: only PLAIN and LOGIN are offered.
	TokeninfoURL string

	// Extra lines appended to dovecot.conf; a setting given again here
	// overrides the one above, e.g. "auth_failure_delay = 2 secs".
	Extra []string
}

// Server is a running Dovecot. Its methods are safe for concurrent use.
type Server struct {
	addr string
	dir  string
	conf string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the master process has exited

	mu    sync.Mutex
	users map[string]bool
}

// Start runs a fresh Dovecot for t. It skips t unless MG_INTEGRATION=1
// is set, and fails it with a message naming the package to install when
// the dovecot binary is missing.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	SkipUnlessEnabled(t)
	s, err := Run(opts)
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dovecottest: Dovecot log (%s):\n%s", s.log, tail(s.Log(), 60))
		}
		s.Stop()
	})
	return s
}

// Run is Start for programs without a testing.TB (the peer benchmark,
// e2e/cmd/peerbench): it does not look at MG_INTEGRATION, and the caller
// stops the server with Stop.
func Run(opts Options) (*Server, error) {
	bin, err := lookDovecot()
	if err != nil {
		return nil, fmt.Errorf("%v: install it with 'apt-get install -y dovecot-imapd' (Debian/Ubuntu), or run ./scripts/test which does", err)
	}
	for _, u := range opts.Users {
		if err := validUser(u); err != nil {
			return nil, err
		}
	}
	ids, err := processUsers()
	if err != nil {
		return nil, err
	}

	// Not t.TempDir(): Dovecot's UNIX sockets live under base_dir and a
	// socket path must fit in 108 bytes, which a long test name breaks; and
	// when we are root the mail processes run as an unprivileged user that
	// must be able to enter every parent directory, which t.TempDir()'s
	// 0700 parent forbids.
	dir, err := os.MkdirTemp("", "dovecottest-")
	if err != nil {
		return nil, err
	}
	if err := prepareDir(dir, opts.Users, ids); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}

	var lastErr error
	// The port is picked by binding :0 and releasing it; another process can
	// take it in between, so try a few times.
	for range 5 {
		port, err := freeport.Port()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s, err := start(bin, dir, port, opts, ids)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, errPortInUse) {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("could not start Dovecot: %w", lastErr)
}

// SkipUnlessEnabled skips t unless MG_INTEGRATION=1 is set. Start
// calls it; call it first yourself when a test does expensive set-up
// before starting Dovecot.
func SkipUnlessEnabled(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvSwitch) != "1" {
		t.Skipf("dovecottest: real-Dovecot test skipped; run it with %s=1 go test ... (needs Debian's dovecot-imapd; ./scripts/test installs it and sets %s)", EnvSwitch, EnvSwitch)
	}
}

var errPortInUse = errors.New("port in use")

// lookDovecot finds the dovecot binary, which lives in /usr/sbin: not on a
// normal user's PATH on Debian.
func lookDovecot() (string, error) {
	if p, err := exec.LookPath("dovecot"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/dovecot", "/usr/local/sbin/dovecot"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("the dovecot binary (package dovecot-core, pulled in by dovecot-imapd) is not installed")
}

func start(bin, dir string, port int, opts Options, id ids) (*Server, error) {
	conf := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(conf, []byte(config(dir, port, opts, id)), 0o644); err != nil {
		return nil, err
	}
	if opts.TokeninfoURL != "" {
		if err := os.WriteFile(filepath.Join(dir, "oauth2.conf.ext"), []byte(oauth2Config(opts.TokeninfoURL)), 0o644); err != nil {
			return nil, err
		}
	}
	logPath := filepath.Join(dir, "dovecot.log")
	before := fileSize(logPath)

	var out bytes.Buffer // early failures (bad config) go to stderr, before log_path is open
	cmd := exec.Command(bin, "-F", "-c", conf)
	cmd.Dir = dir
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Server{
		addr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		dir:   dir,
		conf:  conf,
		log:   logPath,
		users: make(map[string]bool),
		cmd:   cmd,
		done:  make(chan struct{}),
	}
	for _, u := range opts.Users {
		s.users[u] = true
	}
	go func() { _ = cmd.Wait(); close(s.done) }()

	// imap-login greets only once the auth process is up, so a greeting
	// means logins work. A broken config shows as a Fatal line while the
	// master keeps restarting the service: give up on that at once.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err := greeting(s.addr); err == nil {
			return s, nil
		}
		if strings.Contains(readFrom(logPath, before), "Fatal:") {
			break
		}
		select {
		case <-s.done:
			deadline = time.Now() // exited: stop waiting
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.stop()
	log := readFrom(logPath, before)
	msg := strings.TrimSpace(out.String() + "\n" + log)
	if strings.Contains(msg, "Address already in use") {
		return nil, fmt.Errorf("%s: %w", s.addr, errPortInUse)
	}
	return nil, fmt.Errorf("dovecot on %s did not answer (config %s): %s", s.addr, conf, tail(msg, 20))
}

// greeting connects and waits for Dovecot's "* OK" greeting: the listener
// is bound before the login processes are ready to answer.
func greeting(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 5)
	if _, err := c.Read(buf); err != nil {
		return err
	}
	if string(buf[:4]) != "* OK" {
		return fmt.Errorf("greeting %q", buf)
	}
	return nil
}

// AddUser adds a mailbox owner to a running server, like Options.Users.
// Dovecot re-reads the passwd-file when it changes, so the user can log in
// at once. Adding an existing user does nothing.
func (s *Server) AddUser(user string) error {
	if err := validUser(user); err != nil {
		return fmt.Errorf("dovecottest: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users[user] {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(s.dir, "passwd"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("dovecottest: %w", err)
	}
	if _, err := f.WriteString(passwdLine(user)); err != nil {
		f.Close()
		return fmt.Errorf("dovecottest: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("dovecottest: %w", err)
	}
	s.users[user] = true
	return nil
}

func (s *Server) hasUser(user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.users[user]
}

// Kick disconnects every IMAP session of user (doveadm kick), the way a
// server restart or a network drop would; clients see the connection
// close.
func (s *Server) Kick(user string) error {
	bin, err := exec.LookPath("doveadm")
	if err != nil {
		bin = "/usr/bin/doveadm"
	}
	out, err := exec.Command(bin, "-c", s.conf, "kick", user).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dovecottest: doveadm kick %s: %w: %s", user, err, bytes.TrimSpace(out))
	}
	return nil
}

// Addr returns the IMAP listener, "127.0.0.1:PORT" (plaintext).
func (s *Server) Addr() string { return s.addr }

// Log returns Dovecot's log so far.
func (s *Server) Log() string { return readFrom(s.log, 0) }

// Stop stops the server and removes its directory.
func (s *Server) Stop() {
	s.stop()
	os.RemoveAll(s.dir)
}

// stop sends SIGTERM, which makes the master stop its children and exit,
// and waits; a master that hangs is killed.
func (s *Server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func readFrom(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < off {
		return ""
	}
	return string(b[off:])
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
