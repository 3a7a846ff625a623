//go:build !demo

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

// demoModule is the module whose source tree holds the demo.
const demoModule = "github.com/mailgate/mailgate"

// errNoDemo says, in one line, what a production build answers to `demo`
// outside a source tree it can build the demo from.
var errNoDemo = cli.Exit("the demo is not in this build (production builds leave out its fake Google and mail servers): "+
	"run it from a clone of the source, with Go installed: git clone https://github.com/mailgate/mailgate && cd mailgate && go run ./cmd/mailgate demo", 1)

// demoSignals are passed on to the demo while it runs, so that stopping
// this process (Ctrl-C, kill, systemd) stops the demo the same way.
var demoSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// demo builds mailgate with -tags demo from the source tree around the
// working directory and runs it with this command line: same arguments,
// working directory, environment, standard streams and exit status, with
// signals passed on. `go run -tags demo` would be shorter, but go run
// exits 1 whatever the program's status (after printing "exit status N")
// and does not pass SIGTERM on, which would leave the demo running after
// its parent was stopped.
func demo(c *cli.Context) error {
	root, inTree := sourceTree()
	goTool, err := exec.LookPath("go")
	if !inTree || err != nil {
		return errNoDemo
	}
	dir, err := os.MkdirTemp("", "mailgate-demo-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "mailgate")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	build := exec.CommandContext(c.Context, goTool, "build", "-tags", "demo", "-o", bin, "./cmd/mailgate")
	build.Dir = root
	build.Stdout, build.Stderr = c.App.ErrWriter, c.App.ErrWriter
	if err := build.Run(); err != nil {
		return fmt.Errorf("demo: go build -tags demo ./cmd/mailgate in %s: %w", root, err)
	}
	return runPassingSignals(c, exec.Command(bin, commandLine(c)...))
}

// sourceTree finds the mailgate module around the working directory: the
// nearest go.mod above it must be mailgate's, with cmd/mailgate beside it.
func sourceTree() (root string, ok bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			module := moduleLine(f)
			f.Close()
			if module != demoModule {
				return "", false
			}
			st, err := os.Stat(filepath.Join(dir, "cmd", "mailgate"))
			return dir, err == nil && st.IsDir()
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// moduleLine returns the module path a go.mod declares.
func moduleLine(f *os.File) string {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module"); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// commandLine rebuilds the arguments that ran c from what was parsed: the
// global flags that were set, the command, its flags that were set, and
// its arguments.
func commandLine(c *cli.Context) []string {
	var args []string
	for _, f := range c.App.Flags {
		args = appendFlag(args, c, f)
	}
	args = append(args, c.Command.Name)
	for _, f := range c.Command.Flags {
		args = appendFlag(args, c, f)
	}
	return append(args, c.Args().Slice()...)
}

func appendFlag(args []string, c *cli.Context, f cli.Flag) []string {
	name := f.Names()[0]
	if !c.IsSet(name) {
		return args
	}
	if _, ok := f.(*cli.StringSliceFlag); ok {
		for _, v := range c.StringSlice(name) {
			args = append(args, "--"+name+"="+v)
		}
		return args
	}
	return append(args, fmt.Sprintf("--%s=%v", name, c.Value(name)))
}

// runPassingSignals runs cmd on the app's standard streams, passes
// demoSignals on to it, and returns its exit status as an exit error
// without a message: the demo has said why itself.
func runPassingSignals(c *cli.Context, cmd *exec.Cmd) error {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.App.Reader, c.App.Writer, c.App.ErrWriter
	// Caught from before the start, so that none is lost in between.
	sigs := make(chan os.Signal, len(demoSignals))
	signal.Notify(sigs, demoSignals...)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s) // it may have exited meanwhile
		case err := <-done:
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				return err // nil, or it could not be waited for
			}
			code := ee.ExitCode()
			// Killed by a signal: the status a shell would report.
			if ws, ok := ee.Sys().(interface {
				Signaled() bool
				Signal() syscall.Signal
			}); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
			return cli.Exit("", code)
		}
	}
}
