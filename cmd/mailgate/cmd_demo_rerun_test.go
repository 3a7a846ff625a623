//go:build !demo

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestDemoOutsideTheSourceTree is what an operator sees who runs `demo` on
// a production build: one line saying where the demo is, and a failure.
func TestDemoOutsideTheSourceTree(t *testing.T) {
	t.Chdir(t.TempDir())
	code, out, stderr := mailgate(t, "demo")
	if code == 0 || out != "" {
		t.Fatalf("demo outside the source tree = exit %d, stdout %q; want a failure and no output", code, out)
	}
	wantOutput(t, "stderr", stderr, "the demo is not in this build", "git clone https://github.com/mailgate/mailgate", "go run ./cmd/mailgate demo")
	if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 {
		t.Errorf("stderr has %d lines, want one:\n%s", n+1, stderr)
	}
}

// TestDemoWithoutGo: in the source tree, but no Go to build the demo with.
func TestDemoWithoutGo(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	code, _, stderr := mailgate(t, "demo")
	if code == 0 || !strings.Contains(stderr, "the demo is not in this build") {
		t.Fatalf("demo without go on PATH = exit %d, stderr %q", code, stderr)
	}
}

// TestSourceTree finds the module root from anywhere inside it, and no
// root inside another module.
func TestSourceTree(t *testing.T) {
	wd, err := os.Getwd() // cmd/mailgate
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(filepath.Dir(wd))
	if got, ok := sourceTree(); !ok || got != root {
		t.Fatalf("sourceTree() in cmd/mailgate = %q, %v; want %q", got, ok, root)
	}
	t.Chdir(filepath.Join(root, "e2e"))
	if got, ok := sourceTree(); !ok || got != root {
		t.Errorf("sourceTree() in e2e = %q, %v; want %q", got, ok, root)
	}

	other := t.TempDir()
	os.MkdirAll(filepath.Join(other, "cmd", "mailgate"), 0o755)
	os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/fork\n\ngo 1.26\n"), 0o644)
	t.Chdir(filepath.Join(other, "cmd", "mailgate"))
	if got, ok := sourceTree(); ok {
		t.Errorf("sourceTree() in module example.com/fork = %q, want none", got)
	}
}

// TestCommandLine checks that the tagged build is handed the command line
// the user typed, global flags and repeated --set included.
func TestCommandLine(t *testing.T) {
	args := []string{"--config=/etc/mg.yaml", "--redis-url=redis://10.0.0.1:6379/2", "--set=fetch.poll_interval=5s",
		"--set=relay.listen=127.0.0.1:2600", "demo", "--keep-running=true"}
	var got []string
	var out bytes.Buffer
	app := newApp(&out, &out)
	for _, cmd := range app.Commands {
		if cmd.Name == "demo" {
			cmd.Action = func(c *cli.Context) error {
				got = commandLine(c)
				return nil
			}
		}
	}
	if code := runApp(app, append([]string{"mailgate"}, args...), &out); code != 0 {
		t.Fatalf("run = %d: %s", code, out.String())
	}
	if !slices.Equal(got, args) {
		t.Errorf("commandLine = %q\nwant          %q", got, args)
	}
}
