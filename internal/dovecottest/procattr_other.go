//go:build !linux

package dovecottest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
