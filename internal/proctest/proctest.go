// Package proctest gives tests process ids of this host: one whose process
// has exited, and one whose process runs until the test ends. Tests of
// leases use them to play a holder that died and one that lives.
package proctest

import (
	"os/exec"
	"testing"
)

// GonePID returns the pid of a process of this host that has exited (and
// been reaped, so no process has it unless the kernel hands it out again,
// which takes a full turn of the pid space).
func GonePID(t testing.TB) int {
	t.Helper()
	cmd := exec.Command("sleep", "0")
	if err := cmd.Run(); err != nil {
		t.Fatalf("proctest: %v", err)
	}
	return cmd.Process.Pid
}

// LivePID returns the pid of a process of this host that runs until the
// test ends.
func LivePID(t testing.TB) int {
	t.Helper()
	cmd := exec.Command("sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("proctest: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}
