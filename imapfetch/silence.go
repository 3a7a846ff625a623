// This file notices a server that has gone silent: imapclient waits for a
// reply without a deadline, so each command runs under a guard that drops
// the connection once the server has sent nothing for CommandTimeout.

package imapfetch

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// errSilent: the server sent nothing for CommandTimeout while a reply was
// due, and the connection was dropped. Unlike a server closing the
// connection, it is never routine, so it is logged as a warning.
var errSilent = errors.New("imapfetch: the IMAP server stopped answering")

// whySilent says so when err came from guard dropping the connection: the
// error the command itself got ("use of closed network connection") would
// blame the wrong side.
func (s *session) whySilent(err error) error {
	if err == nil || !s.silent.Load() {
		return err
	}
	return fmt.Errorf("%w for %s: %w", errSilent, s.o.CommandTimeout, err)
}

// heardConn remembers when the server last sent anything.
type heardConn struct {
	net.Conn
	last atomic.Int64 // UnixNano of the last read that returned bytes
}

func (c *heardConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// heard returns when the server last sent anything (zero: never).
func (c *heardConn) heard() time.Time {
	if n := c.last.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// guard drops the connection if the server stays silent for CommandTimeout
// while the command it surrounds waits for its reply. It counts silence,
// not the command's whole time: a FETCH of large mails that keeps
// streaming is not cut, while a server that stops mid-reply is noticed
// within CommandTimeout. Call stop when the command is done. It is a timer,
// not a goroutine: every poll of every account runs a few commands.
func (s *session) guard() (stop func()) {
	timeout := s.o.CommandTimeout
	since := time.Now()
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	mu.Lock() // t is set before the timer's func reads it
	defer mu.Unlock()
	t = time.AfterFunc(timeout, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		last := since
		if h := s.conn.heard(); h.After(last) {
			last = h
		}
		if quiet := time.Since(last); quiet < timeout {
			t.Reset(timeout - quiet)
			return
		}
		stopped = true
		s.log.Warn("imapfetch: IMAP server silent; dropping the connection", "timeout", timeout)
		s.silent.Store(true)
		s.conn.Close()
	})
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		t.Stop()
	}
}
