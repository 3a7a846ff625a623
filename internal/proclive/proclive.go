// Package proclive tells whether a process named by host and pid, as
// mailgate writes them into Redis (lease holders, relay workers), is known
// to be gone: it ran on this machine and no process has its pid any more.
// Such a process's work can be taken over at once instead of after its
// heartbeat or lease runs out.
package proclive

import (
	"os"
	"sync"
)

// Host is this machine's host name, as written next to a pid. Two machines
// (or containers with their own pid namespaces) that share a Redis must
// not share a host name, or one could take the other's processes for gone.
var Host = sync.OnceValue(func() string {
	h, _ := os.Hostname()
	return h
})

// Gone reports whether the process host:pid is known to be gone: host is
// this machine and the kernel has no process pid. A process on another
// host, or whose pid is now another program's, is not known to be gone;
// only its expiry tells.
func Gone(host string, pid int) bool {
	h := Host()
	return h != "" && host == h && pid > 0 && pidGone(pid)
}
