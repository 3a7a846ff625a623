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
