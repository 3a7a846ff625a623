// Package faultproxy is a TCP proxy for tests that breaks connections on
// purpose: put it between a client (mailgate) and a server (Dovecot, a
// fake Gmail, a smarthost), and it forwards bytes both ways until told to
// close, reset or stall a connection — at once, or when a byte pattern
// passes, such as the literal of an IMAP FETCH, an IMAP "UID STORE", the
// body of an SMTP DATA or its final "\r\n.\r\n".
//
// A cut freezes the other direction first, so that after a cut on the
// final dot the server has the whole message while the client never sees
// the server's reply: the case where only the server knows the message
// was taken (RFC 1047).
package faultproxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Dir is a direction of a proxied connection.
type Dir int

const (
	// ToServer is what the client sends (an IMAP command, SMTP DATA).
	ToServer Dir = iota
	// ToClient is what the server sends (an IMAP FETCH response, an SMTP
	// reply).
	ToClient
)

func (d Dir) String() string {
	if d == ToServer {
		return "client→server"
	}
	return "server→client"
}

// Action is what happens to a connection.
type Action int

const (
	// Close closes both sides (FIN): the client reads EOF.
	Close Action = iota
	// Reset closes the client's side with SO_LINGER 0, so the client gets
	// an RST (ECONNRESET); the server's side is closed normally, so that
	// what was forwarded to it arrives.
	Reset
	// Stall stops forwarding and leaves both sides open, silent, until
	// Release or Close: a peer that hangs.
	Stall
)

func (a Action) String() string {
	return [...]string{"close", "reset", "stall"}[a]
}

// Rule says when to act on a connection: when Match has passed in
// direction Dir (then Then, if set, and After more bytes), or just before
// Match would pass when Before is set.
type Rule struct {
	Dir    Dir
	Match  []byte
	Before bool   // act before forwarding Match: the peer never sees it
	Then   []byte // after Match, also wait for this (e.g. the CRLF ending its line)
	After  int    // bytes to forward after the end of Match (and Then) before acting
	Action Action
}

// Trigger is an armed Rule. It fires once, on the first connection where
// its Match passes.
type Trigger struct {
	rule  Rule
	fired chan struct{}
	claim atomic.Bool
	at    time.Time // set before fired is closed
}

// Fired is closed when the rule acted.
func (tr *Trigger) Fired() <-chan struct{} { return tr.fired }

// At is when the rule acted (zero before).
func (tr *Trigger) At() time.Time {
	select {
	case <-tr.fired:
		return tr.at
	default:
		return time.Time{}
	}
}

// Wait waits up to timeout for the rule to act and reports whether it did.
func (tr *Trigger) Wait(timeout time.Duration) bool {
	select {
	case <-tr.fired:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Proxy forwards connections from its loopback listener to a target.
type Proxy struct {
	l      net.Listener
	target string

	mu       sync.Mutex
	triggers []*Trigger
	conns    map[*conn]bool
	stalled  []*conn
	accepted int
	closed   bool
	wg       sync.WaitGroup
}

// New starts a proxy to target on 127.0.0.1:0.
func New(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	p := &Proxy{l: l, target: target, conns: map[*conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Start is New for a test: it fails t on error and closes the proxy when
// the test ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// Arm adds a rule; it acts once, on the first connection where it matches.
func (p *Proxy) Arm(r Rule) *Trigger {
	if len(r.Match) == 0 {
		panic("faultproxy: a rule needs a Match; use Cut to act at once")
	}
	tr := &Trigger{rule: r, fired: make(chan struct{})}
	p.mu.Lock()
	p.triggers = append(p.triggers, tr)
	p.mu.Unlock()
	return tr
}

// Disarm removes the rules that have not fired.
func (p *Proxy) Disarm() {
	p.mu.Lock()
	p.triggers = nil
	p.mu.Unlock()
}

// Cut acts on every open connection now and returns how many there were.
func (p *Proxy) Cut(a Action) int {
	p.mu.Lock()
	var cs []*conn
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.act(a)
	}
	return len(cs)
}

// Release closes the stalled connections. A client that wrote during the
// stall gets a reset: the proxy never read those bytes.
func (p *Proxy) Release() {
	p.mu.Lock()
	st := p.stalled
	p.stalled = nil
	p.mu.Unlock()
	for _, c := range st {
		c.client.Close()
		c.server.Close()
	}
}

// Conns is how many connections are open (stalled ones included).
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) + len(p.stalled)
}

// Accepted is how many connections the proxy accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.l.Close()
	p.Cut(Close)
	p.Release()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		cc, err := p.l.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(cc)
		}()
	}
}

func (p *Proxy) handle(cc net.Conn) {
	sc, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		cc.Close()
		return
	}
	c := &conn{p: p, client: cc.(*net.TCPConn), server: sc.(*net.TCPConn)}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		cc.Close()
		sc.Close()
		return
	}
	p.accepted++
	p.conns[c] = true
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.pump(ToServer, c.client, c.server) }()
	go func() { defer wg.Done(); c.pump(ToClient, c.server, c.client) }()
	wg.Wait()
	if !c.stalled.Load() {
		c.client.Close()
		c.server.Close()
	}
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// armed returns the rules for dir that have not fired.
func (p *Proxy) armed(dir Dir) []*Trigger {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*Trigger
	for _, tr := range p.triggers {
		if tr.rule.Dir == dir && !tr.claim.Load() {
			out = append(out, tr)
		}
	}
	return out
}

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
// under way, bytes held back because they may begin a pattern, and done
// when the connection was acted upon (or a write failed).
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
		if c.write(dst, data[:end]) != nil {
			return nil, nil, true
		}
		data = data[end:]
		cut = &cutting{tr: tr, then: r.Then, left: r.After}
	}
	if cut.then != nil {
		seen := append(cut.tail, data...)
		i := bytes.Index(seen, cut.then)
		if i < 0 {
			if c.write(dst, data) != nil {
				return nil, nil, true
			}
			cut.tail = seen[max(0, len(seen)-len(cut.then)+1):]
			return cut, nil, false
		}
		k := i + len(cut.then) - len(cut.tail) // where Then ends in data
		if c.write(dst, data[:k]) != nil {
			return nil, nil, true
		}
		data, cut.then, cut.tail = data[k:], nil, nil
	}
	if len(data) < cut.left {
		cut.left -= len(data)
		if c.write(dst, data) != nil {
			return nil, nil, true
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
