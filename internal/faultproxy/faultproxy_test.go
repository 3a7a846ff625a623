package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// peer is the server side of the tests: it records what it receives on
// its one connection, and sends what the test tells it to.
type peer struct {
	l    net.Listener
	mu   sync.Mutex
	got  bytes.Buffer
	conn chan net.Conn
	eof  chan struct{}
}

func newPeer(t *testing.T) *peer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{l: l, conn: make(chan net.Conn, 1), eof: make(chan struct{})}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { c.Close() })
		p.conn <- c
		buf := make([]byte, 1024)
		for {
			n, err := c.Read(buf)
			p.mu.Lock()
			p.got.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				close(p.eof)
				return
			}
		}
	}()
	return p
}

func (p *peer) received() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got.String()
}

// waitEOF waits until the server side read the end of its connection.
func (p *peer) waitEOF(t *testing.T) {
	t.Helper()
	select {
	case <-p.eof:
	case <-time.After(5 * time.Second):
		t.Fatalf("the server never saw the connection end; it got %q", p.received())
	}
}

func dial(t *testing.T, px *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", px.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads c until it ends (or 2s pass) and returns what came and why
// it ended.
func readAll(c net.Conn) (string, error) {
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var b bytes.Buffer
	_, err := io.Copy(&b, c)
	return b.String(), err
}

func TestForwardsBothWays(t *testing.T) {
	srv := newPeer(t)
	px := Start(t, srv.l.Addr().String())
	c := dial(t, px)
	c.Write([]byte("hello\r\n"))
	sc := <-srv.conn
	sc.Write([]byte("* OK hi\r\n"))
	buf := make([]byte, 9)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "* OK hi\r\n" {
		t.Fatalf("client read %q, %v", buf, err)
	}
	c.Close()
	srv.waitEOF(t)
	if got := srv.received(); got != "hello\r\n" {
		t.Fatalf("server got %q", got)
	}
	if px.Accepted() != 1 {
		t.Fatalf("Accepted() = %d, want 1", px.Accepted())
	}
}

// A cut before "UID STORE": the server never sees the command, the client
// reads EOF.
func TestCloseBeforePattern(t *testing.T) {
	srv := newPeer(t)
	px := Start(t, srv.l.Addr().String())
	tr := px.Arm(Rule{Dir: ToServer, Match: []byte("UID STORE"), Before: true, Action: Close})
	c := dial(t, px)
	c.Write([]byte("T1 NOOP\r\n"))
	time.Sleep(50 * time.Millisecond)
	c.Write([]byte("T2 UID STORE 1 +FLAGS (\\Seen)\r\n"))
	if !tr.Wait(2 * time.Second) {
		t.Fatal("the rule did not fire")
	}
	srv.waitEOF(t)
	if got := srv.received(); got != "T1 NOOP\r\nT2 " {
		t.Fatalf("server got %q, want everything before UID STORE", got)
	}
	if got, err := readAll(c); got != "" || err != nil {
		t.Fatalf("client read %q, %v; want a clean EOF", got, err)
	}
}

// A cut on SMTP's final dot: the server gets the whole message, its reply
// never reaches the client.
func TestCloseAfterFinalDot(t *testing.T) {
	srv := newPeer(t)
	px := Start(t, srv.l.Addr().String())
	px.Arm(Rule{Dir: ToServer, Match: []byte("\r\n.\r\n"), Action: Close})
	c := dial(t, px)
	sc := <-srv.conn
	// The server answers as soon as it has the dot.
	go func() {
		for !bytes.HasSuffix([]byte(srv.received()), []byte("\r\n.\r\n")) {
			time.Sleep(time.Millisecond)
		}
		sc.Write([]byte("250 2.0.0 Ok: queued\r\n"))
	}()
	c.Write([]byte("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"))
	srv.waitEOF(t)
	if got := srv.received(); got != "Subject: x\r\n\r\nbody\r\n.\r\n" {
		t.Fatalf("server got %q, want the message up to its final dot", got)
	}
	if got, _ := readAll(c); got != "" {
		t.Fatalf("client read %q; the server's reply must not reach it", got)
	}
}

// A reset in the middle of a FETCH literal, with the pattern split across
// two writes: the client gets the bytes before the cut, then ECONNRESET.
func TestResetMidLiteral(t *testing.T) {
	srv := newPeer(t)
	px := Start(t, srv.l.Addr().String())
	tr := px.Arm(Rule{Dir: ToClient, Match: []byte("BODY[] {"), After: 8, Action: Reset})
	c := dial(t, px)
	c.Write([]byte("T1 UID FETCH 1 BODY.PEEK[]\r\n"))
	sc := <-srv.conn
	sc.Write([]byte("* 1 FETCH (UID 1 BO"))
	time.Sleep(5 * time.Millisecond)
	sc.Write([]byte("DY[] {20}\r\n0123456789abcdefghij)\r\n"))
	got, err := readAll(c)
	if got != "* 1 FETCH (UID 1 BODY[] {20}\r\n012" {
		t.Fatalf("client read %q", got)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client's read ended with %v, want ECONNRESET", err)
	}
	// The client can see the reset a moment before the proxy's goroutine
	// marks the trigger, so wait for it rather than read At at once.
	if !tr.Wait(time.Second) || tr.At().IsZero() {
		t.Fatal("the trigger has no time")
	}
}

// A rule acts once: the next connection is forwarded whole.
func TestRuleFiresOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { // echo
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	px := Start(t, l.Addr().String())
	px.Arm(Rule{Dir: ToServer, Match: []byte("x"), Action: Close})
	c := dial(t, px)
	c.Write([]byte("x"))
	if got, _ := readAll(c); got != "" {
		t.Fatalf("first connection read %q, want nothing", got)
	}
	c2 := dial(t, px)
	c2.Write([]byte("xyz"))
	buf := make([]byte, 3)
	c2.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(c2, buf); err != nil || string(buf) != "xyz" {
		t.Fatalf("second connection read %q, %v; want the echo", buf, err)
	}
}

// A stall forwards nothing and keeps the connection open until Release.
func TestStallThenRelease(t *testing.T) {
	srv := newPeer(t)
	px := Start(t, srv.l.Addr().String())
	c := dial(t, px)
	c.Write([]byte("a"))
	<-srv.conn
	for srv.received() != "a" {
		time.Sleep(time.Millisecond)
	}
	if n := px.Cut(Stall); n != 1 {
		t.Fatalf("Cut(Stall) acted on %d connections, want 1", n)
	}
	c.Write([]byte("b"))
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, errTimeout(err)) {
		t.Fatalf("a stalled connection read %d bytes, %v; want a timeout", n, err)
	}
	if got := srv.received(); got != "a" {
		t.Fatalf("server got %q through a stall", got)
	}
	if px.Conns() != 1 {
		t.Fatalf("Conns() = %d during the stall, want 1", px.Conns())
	}
	px.Release()
	// The proxy never read the "b": closing with it unread sends a reset.
	if got, err := readAll(c); got != "" || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("after Release the client read %q, %v; want the connection closed", got, err)
	}
}

// errTimeout returns err when it is a timeout, so errors.Is matches it.
func errTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errors.New("not a timeout")
}

// Then waits for the end of the matched line, even when it comes in a
// later write: the client gets the whole reply, then the connection ends.
func TestCloseAfterLine(t *testing.T) {
	srv := newPeer(t)
	px := Start(t, srv.l.Addr().String())
	tr := px.Arm(Rule{Dir: ToClient, Match: []byte("250 2.0.0 Ok: queued"), Then: []byte("\r\n"), Action: Close})
	c := dial(t, px)
	c.Write([]byte("."))
	sc := <-srv.conn
	sc.Write([]byte("250 2.0.0 Ok: queued as ABC\r"))
	time.Sleep(30 * time.Millisecond)
	if tr.At() != (time.Time{}) {
		t.Fatal("the rule fired before the end of the line")
	}
	sc.Write([]byte("\n221 Bye\r\n"))
	if got, err := readAll(c); got != "250 2.0.0 Ok: queued as ABC\r\n" || err != nil {
		t.Fatalf("client read %q, %v; want the whole 250 line, then EOF", got, err)
	}
}
