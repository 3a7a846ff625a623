//go:build unix

package accounts

import (
	"errors"
	"syscall"
)

// pidLiveness asks the kernel with signal 0, which checks without sending
// (kill(2)): ESRCH means no such process; EPERM means one exists that
// belongs to another user.
func pidLiveness(pid int) Liveness {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return Gone
	}
	return Alive
}
