package faults

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/mgproc"
)

// binary is the mailgate built once by TestMain, or "" when the suite is
// off.
var binary string

func TestMain(m *testing.M) {
	if os.Getenv("MG_INTEGRATION") != "1" {
		os.Exit(m.Run()) // every test skips
	}
	dir, err := os.MkdirTemp("", "mailgate-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	start := time.Now()
	if binary, err = mgproc.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "faults: built mailgate in %s\n", time.Since(start).Round(100*time.Millisecond))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need skips t unless the suite is on.
func need(t *testing.T) {
	t.Helper()
	if binary == "" {
		t.Skip("set MG_INTEGRATION=1 to run the fault suite (scripts/test does): it builds mailgate and breaks Redis, Dovecot and SMTP under it")
	}
}
