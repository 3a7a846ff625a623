package proclive

import (
	"os"
	"os/exec"
	"testing"
)

// A process that exited is gone; this one, one on another host and one
// without a pid are not known to be.
func TestGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	dead := cmd.Process.Pid
	for _, tc := range []struct {
		host string
		pid  int
		want bool
	}{
		{Host(), dead, true},
		{Host(), os.Getpid(), false},
		{"elsewhere.example", dead, false},
		{Host(), 0, false},
	} {
		if got := Gone(tc.host, tc.pid); got != tc.want {
			t.Errorf("Gone(%q, %d) = %v, want %v", tc.host, tc.pid, got, tc.want)
		}
	}
}
