package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/mgproc"
)

// fakeCode matches what only the demo and the tests may link: the fakes,
// the test CA and the embedded Redis (with its Lua interpreter).
var fakeCode = regexp.MustCompile(`mailgate/internal/(fake|testcert)|alicebob/miniredis|yuin/gopher-lua`)

// TestProductionBinaryHasNoFakes checks the mailgate operators build (`go
// build ./cmd/mailgate`, as TestMain does) for the fake servers: neither
// its symbols nor its module list may name them. The same check on the
// demo build must find them, or it proves nothing.
func TestProductionBinaryHasNoFakes(t *testing.T) {
	if binary == "" {
		t.Skip("set MG_INTEGRATION=1 to build mailgate and check what it links")
	}
	symbols, modules := linked(t, binary)
	if !strings.Contains(symbols, "github.com/mailgate/mailgate/smtprelay.") {
		t.Fatalf("go tool nm %s lists no smtprelay symbol: the check would be vacuous", binary)
	}
	if found := fakeCode.FindAllString(symbols, 5); len(found) > 0 {
		t.Errorf("the production binary links test code: go tool nm shows %q", found)
	}
	if found := fakeCode.FindAllString(modules, 5); len(found) > 0 {
		t.Errorf("the production binary links test code: go version -m shows %q", found)
	}

	demo := filepath.Join(t.TempDir(), "mailgate-demo")
	build := exec.Command(mgproc.GoTool(), "build", "-tags", "demo", "-o", demo, "./cmd/mailgate")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags demo ./cmd/mailgate: %v\n%s", err, out)
	}
	symbols, modules = linked(t, demo)
	if !strings.Contains(symbols, "mailgate/internal/fakeworld.") || !strings.Contains(modules, "alicebob/miniredis") {
		t.Error("the demo build does not show the fakes to go tool nm / go version -m: the check above proves nothing")
	}
}

// linked returns what go tool nm and go version -m say of bin.
func linked(t *testing.T, bin string) (symbols, modules string) {
	t.Helper()
	nm, err := exec.Command(mgproc.GoTool(), "tool", "nm", bin).Output()
	if err != nil {
		t.Fatalf("go tool nm %s: %v", bin, err)
	}
	m, err := exec.Command(mgproc.GoTool(), "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m %s: %v", bin, err)
	}
	return string(nm), string(m)
}

// TestDemoFromProductionBuild runs the README's first command the way
// `go run ./cmd/mailgate demo` does, on the production build: in the
// source tree it builds the demo and plays it, --keep-running keeps it up
// until a SIGTERM to the command stops it cleanly, and the demo's exit
// status is the command's.
func TestDemoFromProductionBuild(t *testing.T) {
	if binary == "" {
		t.Skip("set MG_INTEGRATION=1 to build mailgate and run its demo")
	}
	// The demo is built with the go on PATH: the toolchain running us.
	path := filepath.Dir(mgproc.GoTool()) + string(os.PathListSeparator) + os.Getenv("PATH")
	env := append(mgproc.Env(), "PATH="+path)

	var out, errOut syncBuffer
	cmd := exec.Command(binary, "--redis-url", "redis://127.0.0.1:1/0", "demo", "--keep-running")
	cmd.Dir = ".." // the module root, where the README runs it
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The first build of the demo compiles the fakes: give it time.
	deadline := time.After(5 * time.Minute)
	for !strings.Contains(out.String(), "still running (Ctrl-C to stop)") {
		select {
		case err := <-done:
			t.Fatalf("demo exited (%v) before its scene ended\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
		case <-deadline:
			// SIGTERM, not a kill, so that the demo it started stops too.
			cmd.Process.Signal(syscall.SIGTERM)
			t.Fatalf("demo --keep-running not up after 5 minutes\nstdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	wantOutput(t, out.String(), "imported 5 recent mails", "DKIM-signed for acme.example: the signature verifies", "[##########] 3/3")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo after SIGTERM: %v (want exit 0)\nstderr:\n%s", err, errOut.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("demo still running 30s after SIGTERM: the signal did not reach it")
	}
	wantOutput(t, out.String(), "done in")

	// A configuration error in the demo exits 2, as everywhere else.
	bad := exec.Command(binary, "--set", "fetch.poll_interval=soon", "demo")
	bad.Dir, bad.Env = "..", env
	var stderr bytes.Buffer
	bad.Stderr = &stderr
	err := bad.Run()
	if code := bad.ProcessState.ExitCode(); code != 2 || !strings.Contains(stderr.String(), "fetch.poll_interval") {
		t.Errorf("demo with a bad --set = exit %d (%v), stderr %q; want 2 naming fetch.poll_interval", code, err, stderr.String())
	}
}

// wantOutput fails t for each of wants that out lacks.
func wantOutput(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// syncBuffer is an output a process writes while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
