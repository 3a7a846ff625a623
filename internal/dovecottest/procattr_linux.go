package dovecottest

import "syscall"

// sysProcAttr asks the kernel to SIGTERM the Dovecot master if the test
// binary dies without running its cleanups (a panic, go test's timeout
// kill), so no stray server keeps the port and the temp dir busy.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
