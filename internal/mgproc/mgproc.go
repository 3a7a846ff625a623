// Package mgproc runs mailgate as an operator does: it builds the binary
// and runs its commands and `mailgate serve` as separate processes, which
// tests can signal and kill (-9). The e2e tests and the fault suite
// (faults) share it.
package mgproc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// GoTool is the go command of the toolchain running the test.
func GoTool() string {
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "go"
}

// Build compiles the production mailgate (`go build ./cmd/mailgate`) into
// dir and returns its path. It runs from the working directory, which
// must be inside the module. The binary is built without -race even under
// `go test -race`: it is the program operators run, and the race detector
// would make timings meaningless.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "mailgate")
	cmd := exec.Command(GoTool(), "build", "-o", bin, "github.com/mailgate/mailgate/cmd/mailgate")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/mailgate: %w\n%s", err, out)
	}
	return bin, nil
}

// Env is this process's environment without MAILGATE_* variables, so
// that the configuration file alone decides (and a stray variable, which
// mailgate refuses when it does not know it, cannot break a run).
func Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MAILGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// Run runs a mailgate command to completion and returns its output.
func Run(ctx context.Context, bin, config string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, bin, append([]string{"--config", config}, args...)...)
	cmd.Env = Env()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("mailgate %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), errOut.String(), err
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
	cmd.Env = Env()
	cmd.Stdout, cmd.Stderr = lf, lf
	// A test binary that dies without its cleanups takes serve with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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
