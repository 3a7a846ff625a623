// Package e2e runs mailgate as an operator does: the built binary, as a
// separate process, against a real redis-server and the fakes of Google
// (OAuth, Gmail IMAP, Gmail SMTP) and of a recipient's mail server from
// internal/, which live in the calling process.
//
// The tests in this package need MG_INTEGRATION=1 (scripts/test sets
// it): they build the binary and run for tens of seconds. cmd/rssbench,
// which bench/rss.sh runs, uses the same world to measure the memory of
// `mailgate serve` with many accounts.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/freeport"
	"github.com/mailgate/mailgate/internal/testcert"
)

// DKIMDomain is the domain the world holds a DKIM key for: accounts on it
// may go direct (signed) when they cannot go via Gmail.
const DKIMDomain = "acme.example"

// Fakes are the outside world mailgate talks to.
type Fakes struct {
	Dir       string
	OAuth     *fakeoauth.Server
	IMAP      *fakegmail.Server
	IMAPAddr  string
	GmailSMTP *fakesmtp.Server // smtp.gmail.com:587
	MX        *fakesmtp.Server // every recipient's server; relay.smarthost
	CAFile    string           // google.ca_file: trusts the fakes' certificates
	DKIMKey   string           // private key file for DKIMDomain
}

// StartFakes starts every fake on loopback, writing its files into dir.
func StartFakes(dir string) (*Fakes, error) {
	f := &Fakes{Dir: dir, OAuth: fakeoauth.New()}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	ca, err := testcert.New()
	if err != nil {
		return nil, err
	}
	if f.CAFile, _, _, err = ca.WritePEM(dir); err != nil {
		return nil, err
	}
	if f.IMAP, err = fakegmail.New(fakegmail.Options{Validate: f.OAuth.Validate}); err != nil {
		return nil, err
	}
	addr, err := f.IMAP.Start()
	if err != nil {
		return nil, err
	}
	f.IMAPAddr = addr.String()
	if f.GmailSMTP, err = fakesmtp.NewGmail(fakesmtp.GmailOptions{TLS: ca.ServerTLS("smtp.gmail.com"), Validate: f.OAuth.Validate}); err != nil {
		return nil, err
	}
	if f.MX, err = fakesmtp.NewMX(fakesmtp.MXOptions{TLS: ca.ServerTLS("mx.customer.example"), Hostname: "mx.customer.example"}); err != nil {
		return nil, err
	}
	key, err := dkim.Generate(dkim.AlgoEd25519, 0)
	if err != nil {
		return nil, err
	}
	f.DKIMKey = filepath.Join(dir, "e2e._domainkey."+DKIMDomain+".pem")
	if err := dkim.WriteKey(f.DKIMKey, key); err != nil {
		return nil, err
	}
	ok = true
	return f, nil
}

// Close stops the fakes.
func (f *Fakes) Close() {
	if f.IMAP != nil {
		f.IMAP.Close()
	}
	if f.GmailSMTP != nil {
		f.GmailSMTP.Close()
	}
	if f.MX != nil {
		f.MX.Close()
	}
	f.OAuth.Close()
}

// Config is what varies between the configurations the tests write.
type Config struct {
	RedisURL      string
	RelayListen   string // host:port
	HTTPListen    string // host:port
	PollInterval  time.Duration
	LeaseTTL      time.Duration
	ShutdownGrace time.Duration
	LogLevel      string // default info
	Smarthost     string // relay.smarthost; default the fake MX
}

// WriteConfig writes a mailgate configuration pointing at the fakes and
// returns its path.
func (f *Fakes) WriteConfig(name string, c Config) (string, error) {
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Smarthost == "" {
		c.Smarthost = f.MX.Addr()
	}
	q := strconv.Quote
	y := fmt.Sprintf(`redis:
  url: %s
secrets:
  key_file: %s
google:
  client_id: %s
  client_secret: %s
  auth_url: %s
  token_url: %s
  userinfo_url: %s
  imap_addr: %s
  imap_tls: plain
  smtp_addr: %s
  smtp_tls: starttls
  ca_file: %s
fetch:
  poll_interval: %s
  lease_ttl: %s
  backoff_max: 2s
relay:
  listen: %s
  hostname: relay.e2e.test
  smarthost: %s
  retry_schedule: [1s]
dkim:
  keys:
    - domain: %s
      selector: e2e
      algorithm: ed25519
      private_key_file: %s
http:
  listen: %s
log:
  level: %s
shutdown_grace: %s
`,
		q(c.RedisURL), q(filepath.Join(f.Dir, "mailgate.key")),
		q(fakeoauth.ClientID), q(fakeoauth.ClientSecret),
		q(f.OAuth.URL+"/auth"), q(f.OAuth.URL+"/token"), q(f.OAuth.UserinfoURL()),
		q(f.IMAPAddr), q(f.GmailSMTP.Addr()), q(f.CAFile),
		c.PollInterval, c.LeaseTTL,
		q(c.RelayListen), q(c.Smarthost),
		DKIMDomain, q(f.DKIMKey),
		q(c.HTTPListen), c.LogLevel, c.ShutdownGrace)
	path := filepath.Join(f.Dir, name)
	return path, os.WriteFile(path, []byte(y), 0o600)
}

// FreeAddr returns a loopback address with a port free at the time of
// the call, for listeners the binary opens itself.
func FreeAddr() (string, error) { return freeport.Addr() }

// Run runs a mailgate command to completion and returns its output.
func Run(ctx context.Context, bin, config string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, bin, append([]string{"--config", config}, args...)...)
	cmd.Env = childEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("mailgate %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), errOut.String(), err
}

// childEnv is this process's environment without MAILGATE_* variables,
// so that the configuration file alone decides (and a stray variable,
// which mailgate refuses when it does not know it, cannot break a run).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MAILGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// Process is a running `mailgate serve`.
type Process struct {
	LogPath string
	Started time.Time
	cmd     *exec.Cmd
	log     *os.File
	done    chan struct{}
	state   *os.ProcessState
}

// StartServe starts `mailgate --config config [args...] serve` with its
// log (stdout and stderr) going to logPath.
func StartServe(bin, config, logPath string, args ...string) (*Process, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args = append([]string{"--config", config}, args...)
	cmd := exec.Command(bin, append(args, "serve")...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	p := &Process{LogPath: logPath, Started: time.Now(), cmd: cmd, log: lf, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill kills the process (SIGKILL) and waits for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Wait waits up to timeout for the process to exit and returns its exit
// status (-1 when killed by a signal).
func (p *Process) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.state.ExitCode(), nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("mailgate serve (pid %d) still running after %s", p.Pid(), timeout)
	}
}

// Log returns the process's log so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// WaitLog waits until the log contains s.
func (p *Process) WaitLog(s string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(p.Log(), s) {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("mailgate serve exited (%s) before logging %q", p.state, s)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mailgate serve did not log %q within %s", s, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Memory is a process's resident memory in KiB, now and at its peak.
type Memory struct{ RSS, Peak int64 }

// ReadMemory reads VmRSS and VmHWM from /proc/<pid>/status (Linux).
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			m.RSS = n
		case "VmHWM":
			m.Peak = n
		}
	}
	if m.RSS == 0 {
		return m, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return m, sc.Err()
}
