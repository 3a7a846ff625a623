//go:build unix

package proclive

import (
	"errors"
	"syscall"
)

// pidGone asks the kernel with signal 0, which checks without sending
// (kill(2)): ESRCH means no such process; EPERM means one exists that
// belongs to another user.
func pidGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
