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
	"os/user"
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

// ids are the system users Dovecot's processes run as.
type ids struct {
	root     bool
	internal string // default_internal_user: auth, stats, anvil, ...
	group    string // default_internal_group: owns stats-writer and friends
	login    string // default_login_user: imap-login, handles untrusted input
	mailUser string // owner of the mailboxes; userdb uid/gid
	uid, gid int
}

// processUsers picks who runs what. As root (CI containers), Dovecot
// insists on an unprivileged login user ("This process must not be run as
// root") and refuses uid 0 for mail ("userdb returned 0 as uid"), so it
// gets the users its package creates: dovecot for internal processes and
// mail, dovenull for logins. As anyone else, everything runs as the
// current user, Dovecot's documented non-root mode.
func processUsers() (ids, error) {
	if os.Geteuid() == 0 {
		dv, err := user.Lookup("dovecot")
		if err != nil {
			return ids{}, fmt.Errorf("running as root needs the system user 'dovecot' (created by the dovecot-core package): %w", err)
		}
		if _, err := user.Lookup("dovenull"); err != nil {
			return ids{}, fmt.Errorf("running as root needs the system user 'dovenull' (created by the dovecot-core package): %w", err)
		}
		uid, _ := strconv.Atoi(dv.Uid)
		gid, _ := strconv.Atoi(dv.Gid)
		return ids{root: true, internal: "dovecot", group: "dovecot", login: "dovenull", mailUser: "dovecot", uid: uid, gid: gid}, nil
	}
	me, err := user.Current()
	if err != nil {
		return ids{}, fmt.Errorf("current user: %w", err)
	}
	g, err := user.LookupGroupId(me.Gid)
	if err != nil {
		return ids{}, fmt.Errorf("current user's group: %w", err)
	}
	uid, _ := strconv.Atoi(me.Uid)
	gid, _ := strconv.Atoi(me.Gid)
	return ids{internal: me.Username, group: g.Name, login: me.Username, mailUser: me.Username, uid: uid, gid: gid}, nil
}

// prepareDir lays out dir: run/ (base_dir), state/, mail/ (homes) and the
// passwd-file.
func prepareDir(dir string, users []string, id ids) error {
	for _, sub := range []string{"run", "state", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	var pw strings.Builder
	for _, u := range users {
		pw.WriteString(passwdLine(u))
	}
	// 0644: the auth process runs as the internal user, and the password
	// is a published test constant.
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(pw.String()), 0o644); err != nil {
		return err
	}
	if id.root {
		// The mail processes (uid dovecot) must enter dir and own mail/.
		if err := os.Chmod(dir, 0o711); err != nil {
			return err
		}
		if err := os.Chown(filepath.Join(dir, "mail"), id.uid, id.gid); err != nil {
			return err
		}
	}
	return nil
}

// passwdLine is user's passwd-file entry:
// user:password:uid:gid:gecos:home:shell:extra, where uid, gid and home
// come from the userdb's default_fields.
func passwdLine(user string) string {
	return fmt.Sprintf("%s:{PLAIN}%s::::::\n", user, Password)
}

func validUser(u string) error {
	if u == "" || strings.ContainsAny(u, ":/ \t\r\n\"\\%") {
		return fmt.Errorf("user %q cannot go in a passwd-file", u)
	}
	return nil
}

// config returns dovecot.conf. Every path is inside dir, so nothing from
// /etc/dovecot is read and two servers never share a socket. Settings are
// quoted, but passdb/userdb args are split on spaces and cannot be: a
// TMPDIR with a space in it would break them.
func config(dir string, port int, opts Options, id ids) string {
	q := strconv.Quote
	mechs := "plain login"
	if opts.TokeninfoURL != "" {
		mechs += " xoauth2 oauthbearer"
	}
	lines := []string{
		"# Written by internal/dovecottest; see config() there.",
		"base_dir = " + q(filepath.Join(dir, "run")),
		"state_dir = " + q(filepath.Join(dir, "state")),
		"instance_name = dovecottest-" + strconv.Itoa(port),
		"log_path = " + q(filepath.Join(dir, "dovecot.log")),
		"protocols = imap",
		"listen = 127.0.0.1",
		// Loopback only: no TLS, and plaintext auth allowed on it (by
		// default Dovecot refuses LOGIN/PLAIN without TLS from non-local
		// addresses; 127.0.0.1 is "secured" anyway, this makes it explicit).
		"ssl = no",
		"disable_plaintext_auth = no",
		"auth_mechanisms = " + mechs,
		// Log why a login failed (unknown user, bad token), not only that
		// it did: the log is printed when a test fails.
		"auth_verbose = yes",
		// A failed login is answered after auth_failure_delay (2s), and
		// the next attempts from the same IP after an anvil penalty that
		// doubles up to 15s (turned off below). Every test client is
		// 127.0.0.1, so tests of rejected tokens would take minutes.
		// Options.Extra can put the delay back.
		"auth_failure_delay = 0",
		"default_internal_user = " + id.internal,
		"default_internal_group = " + id.group,
		"default_login_user = " + id.login,
		// Dovecot refuses mail uids below 500 by default; Debian's
		// dovecot user is a system user (uid ~100).
		"first_valid_uid = " + strconv.Itoa(min(id.uid, 500)),
		// sdbox, not maildir: with maildir an APPEND costs time in
		// proportion to the mailbox (10,000 APPENDs of 10 KB took over
		// three minutes; with sdbox, 15s). Options.Extra can choose
		// "mail_location = maildir:~/Maildir".
		"mail_location = sdbox:~/sdbox",
		// Nothing here needs to survive a crash: skip fsync.
		"mail_fsync = never",
		// Gmail allows 15 simultaneous IMAP connections per account;
		// Dovecot's default is 10 per user and IP, and every test client
		// comes from 127.0.0.1.
		"mail_max_userip_connections = 15",
		"",
		"passdb {",
		"  driver = passwd-file",
		"  mechanisms = plain login",
		"  args = scheme=PLAIN username_format=%u " + filepath.Join(dir, "passwd"),
		"}",
	}
	if opts.TokeninfoURL != "" {
		lines = append(lines,
			"passdb {",
			"  driver = oauth2",
			"  mechanisms = xoauth2 oauthbearer",
			"  args = "+filepath.Join(dir, "oauth2.conf.ext"),
			"}",
		)
	}
	lines = append(lines,
		// The passwd-file is also the userdb, so an access token for an
		// address that has no mailbox here fails like an unknown user.
		"userdb {",
		"  driver = passwd-file",
		"  args = username_format=%u "+filepath.Join(dir, "passwd"),
		fmt.Sprintf("  default_fields = uid=%d gid=%d home=%s/%%u", id.uid, id.gid, filepath.Join(dir, "mail")),
		"}",
		"",
		"service imap-login {",
		"  inet_listener imap {",
		"    address = 127.0.0.1",
		"    port = "+strconv.Itoa(port),
		"  }",
		"  inet_listener imaps {",
		"    port = 0",
		"  }",
		// chroot needs root; without it the non-root mode works too.
		"  chroot =",
		"}",
		"service anvil {",
		"  chroot =",
		// No socket, no penalty (wiki: Authentication.Penalty).
		"  unix_listener anvil-auth-penalty {",
		"    mode = 0",
		"  }",
		"}",
		"",
	)
	lines = append(lines, opts.Extra...)
	return strings.Join(lines, "\n") + "\n"
}

// oauth2Config is the oauth2 passdb's file, as Dovecot's documentation
// shows for Google: tokeninfo only (no introspection), the login name from
// the "email" field, which must equal the user logging in. Dovecot 2.3
// judges a token by the HTTP status alone: 2xx valid, 4xx invalid; it
// ignores expires_in, even "0".
func oauth2Config(tokeninfoURL string) string {
	return strings.Join([]string{
		"tokeninfo_url = " + tokeninfoURL,
		"username_attribute = email",
		"timeout_msecs = 5000",
	}, "\n") + "\n"
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
