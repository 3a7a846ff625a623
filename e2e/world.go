// Package e2e runs mailgate as an operator does: the built binary, as a
// separate process, against a real redis-server and the fakes of Google
// (OAuth, Gmail IMAP, Gmail SMTP) and of a recipient's mail server from
// internal/fakeworld, which live in the calling process.
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

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/internal/fakeworld"
	"github.com/mailgate/mailgate/internal/freeport"
)

// DKIMDomain is the domain the world holds a DKIM key for: accounts on it
// may go direct (signed) when they cannot go via Gmail.
const DKIMDomain = fakeworld.DKIMDomain

// Fakes are the outside world mailgate talks to.
type Fakes struct{ *fakeworld.World }

// StartFakes starts every fake on loopback, writing its files into dir.
func StartFakes(dir string) (*Fakes, error) {
	w, err := fakeworld.Start(fakeworld.Options{Dir: dir, DKIMAlgorithm: dkim.AlgoEd25519, DKIMSelector: "e2e"})
	if err != nil {
		return nil, err
	}
	return &Fakes{w}, nil
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
	cfg := config.Defaults()
	f.Configure(cfg)
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Smarthost == "" {
		c.Smarthost = f.MX.Addr()
	}
	cfg.Redis.URL = c.RedisURL
	cfg.Fetch.PollInterval = config.Duration(c.PollInterval)
	cfg.Fetch.LeaseTTL = config.Duration(c.LeaseTTL)
	cfg.Fetch.BackoffMax = config.Duration(2 * time.Second)
	cfg.Relay.Listen = c.RelayListen
	cfg.Relay.Hostname = "relay.e2e.test"
	cfg.Relay.Smarthost = c.Smarthost
	cfg.Relay.RetrySchedule = []config.Duration{config.Duration(time.Second)}
	cfg.HTTP.Listen = c.HTTPListen
	cfg.Log.Level = c.LogLevel
	cfg.ShutdownGrace = config.Duration(c.ShutdownGrace)
	y, err := cfg.YAML()
	if err != nil {
		return "", err
	}
	path := filepath.Join(f.Dir, name)
	return path, os.WriteFile(path, y, 0o600)
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
