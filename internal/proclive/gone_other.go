//go:build !unix

package proclive

// pidGone cannot tell without kill(2): the process counts as alive, and
// its heartbeat or lease is waited out.
func pidGone(int) bool { return false }
