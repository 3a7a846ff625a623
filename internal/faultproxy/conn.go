package faultproxy

// This file is one proxied connection: two pumps, one per direction, that
// forward bytes and watch them for the armed rules.

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one proxied connection.
type conn struct {
	p              *Proxy
	client, server *net.TCPConn
	once           sync.Once
	frozen         atomic.Bool // acted upon: nothing more is forwarded
	stalled        atomic.Bool // left open for Release
}

// errFrozen ends a pump whose connection was acted upon.
var errFrozen = errors.New("faultproxy: connection cut")

// holdFlush is how long bytes that could begin a pattern are held back
// waiting for the rest; then they go on, so that a protocol waiting for
// them does not hang.
const holdFlush = 20 * time.Millisecond

// pump forwards src to dst, watching for the armed rules of dir.
func (c *conn) pump(dir Dir, src, dst *net.TCPConn) {
	defer func() {
		if !c.frozen.Load() {
			// One side ended: end the other, as a plain proxy does.
			dst.CloseWrite()
		}
	}()
	buf := make([]byte, 32*1024)
	var held []byte // a tail that may begin a pattern, waiting for more
	var cut *cutting
	defer func() {
		if cut != nil {
			// The connection ended before the rule acted: let the
			// next one fire it.
			cut.tr.claim.Store(false)
		}
	}()
	for !c.frozen.Load() {
		if len(held) > 0 {
			src.SetReadDeadline(time.Now().Add(holdFlush))
		} else {
			src.SetReadDeadline(time.Time{})
		}
		n, err := src.Read(buf)
		if n == 0 && err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && len(held) > 0 {
				if c.write(dst, held) != nil {
					return
				}
				held = nil
				continue
			}
			c.write(dst, held)
			return
		}
		data := append(held, buf[:n]...)
		held = nil
		var done bool
		if cut, held, done = c.step(dir, dst, cut, data); done {
			return
		}
		if err != nil {
			c.write(dst, held)
			return
		}
	}
}

// cutting is a rule whose Match has passed on a connection, waiting for
// its Then and After bytes before it acts.
type cutting struct {
	tr   *Trigger
	then []byte // still to pass, or nil
	tail []byte // the last bytes forwarded, where Then may have begun
	left int    // bytes to forward once Then has passed
}

// step forwards data, acting when a rule says so. It returns the rule
// under way (nil once it acted), bytes held back because they may begin a
// pattern, and done when the connection was acted upon or a write failed.
func (c *conn) step(dir Dir, dst *net.TCPConn, cut *cutting, data []byte) (*cutting, []byte, bool) {
	if cut == nil {
		tr, pos := c.match(dir, data)
		if tr == nil {
			// Hold back a tail that could be the start of a pattern.
			keep := c.partial(dir, data)
			if c.write(dst, data[:len(data)-keep]) != nil {
				return nil, nil, true
			}
			if keep == 0 {
				return nil, nil, false
			}
			return nil, append([]byte(nil), data[len(data)-keep:]...), false
		}
		r := tr.rule
		if r.Before {
			c.fire(tr, dst, data[:pos])
			return nil, nil, true
		}
		end := pos + len(r.Match)
		if r.Then == nil && r.After == 0 {
			// The cut is right after the match: fire freezes the other
			// direction before forwarding it, so an answer to these
			// bytes cannot slip through before the cut.
			c.fire(tr, dst, data[:end])
			return nil, nil, true
		}
		cut = &cutting{tr: tr, then: r.Then, left: r.After}
		if c.write(dst, data[:end]) != nil {
			return cut, nil, true
		}
		data = data[end:]
	}
	if cut.then != nil {
		seen := append(cut.tail, data...)
		i := bytes.Index(seen, cut.then)
		if i < 0 {
			if c.write(dst, data) != nil {
				return cut, nil, true
			}
			cut.tail = seen[max(0, len(seen)-len(cut.then)+1):]
			return cut, nil, false
		}
		k := i + len(cut.then) - len(cut.tail) // where Then ends in data
		if c.write(dst, data[:k]) != nil {
			return cut, nil, true
		}
		data, cut.then, cut.tail = data[k:], nil, nil
	}
	if len(data) < cut.left {
		cut.left -= len(data)
		if c.write(dst, data) != nil {
			return cut, nil, true
		}
		return cut, nil, false
	}
	c.fire(cut.tr, dst, data[:cut.left])
	return nil, nil, true
}

// write forwards b unless the connection was acted upon.
func (c *conn) write(dst *net.TCPConn, b []byte) error {
	if c.frozen.Load() {
		return errFrozen
	}
	if len(b) == 0 {
		return nil
	}
	_, err := dst.Write(b)
	return err
}

// match finds the armed rule of dir whose pattern comes first in data and
// claims it, so that it fires on this connection only.
func (c *conn) match(dir Dir, data []byte) (*Trigger, int) {
	for {
		var best *Trigger
		bestPos := -1
		for _, tr := range c.p.armed(dir) {
			if i := bytes.Index(data, tr.rule.Match); i >= 0 && (bestPos < 0 || i < bestPos) {
				best, bestPos = tr, i
			}
		}
		if best == nil {
			return nil, -1
		}
		if best.claim.CompareAndSwap(false, true) {
			return best, bestPos
		}
		// Another connection took it first: look again.
	}
}

// partial returns the length of the longest tail of data that is a proper
// prefix of an armed pattern of dir.
func (c *conn) partial(dir Dir, data []byte) int {
	keep := 0
	for _, tr := range c.p.armed(dir) {
		m := tr.rule.Match
		for k := min(len(m)-1, len(data)); k > keep; k-- {
			if bytes.HasSuffix(data, m[:k]) {
				keep = k
				break
			}
		}
	}
	return keep
}

// fire forwards last (the bytes up to the cut) and acts as tr says. The
// other direction is frozen first: after a cut on the final dot, the
// server's reply (which can only come once the dot is forwarded) must not
// reach the client.
func (c *conn) fire(tr *Trigger, dst *net.TCPConn, last []byte) {
	c.frozen.Store(true)
	if len(last) > 0 {
		dst.Write(last)
	}
	c.act(tr.rule.Action)
	tr.at = time.Now()
	close(tr.fired)
}

// act closes, resets or stalls the connection, once.
func (c *conn) act(a Action) {
	c.once.Do(func() {
		c.frozen.Store(true)
		switch a {
		case Close:
			c.client.Close()
			c.server.Close()
		case Reset:
			c.client.SetLinger(0)
			c.client.Close()
			c.server.Close()
		case Stall:
			c.p.mu.Lock()
			if c.p.closed {
				c.p.mu.Unlock()
				c.client.Close()
				c.server.Close()
				return
			}
			c.p.stalled = append(c.p.stalled, c)
			c.stalled.Store(true)
			c.p.mu.Unlock()
			// Wake the pumps without closing: they see frozen and stop.
			c.client.SetReadDeadline(time.Now())
			c.server.SetReadDeadline(time.Now())
		}
	})
}
