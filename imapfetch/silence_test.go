package imapfetch

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/internal/testcert"
	"github.com/mailgate/mailgate/tlsmode"
)

// fetchProxy sits between the fetcher and the fake Gmail. Once the client
// asks for message bodies (UID FETCH ... BODY.PEEK[]), it can go silent
// partway through the server's reply, keeping the connection open, as a
// hung server or a dead NAT path does; or pass the reply on in small
// pieces, as a slow link does.
type fetchProxy struct {
	l        net.Listener
	upstream string
	trickle  time.Duration // with stall 0: pause between 64-byte pieces of a FETCH reply

	mu     sync.Mutex
	stall  int // connections left to go silent mid-FETCH
	conns  int
	events []proxyEvent
}

// proxyEvent is a stall: when it began, and when the client gave up.
type proxyEvent struct{ silent, dropped time.Time }

func startFetchProxy(t *testing.T, upstream string, stall int, trickle time.Duration) *fetchProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fetchProxy{l: l, upstream: upstream, stall: stall, trickle: trickle}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *fetchProxy) serve(down net.Conn) {
	defer down.Close()
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	defer up.Close()
	p.mu.Lock()
	p.conns++
	stall := p.stall > 0
	if stall {
		p.stall--
	}
	p.mu.Unlock()

	fetching, gone := make(chan struct{}), make(chan struct{})
	go func() { // client → server, line by line
		defer close(gone)
		var once sync.Once
		r := bufio.NewReader(down)
		for {
			line, err := r.ReadString('\n')
			if strings.Contains(line, "BODY.PEEK[]") {
				once.Do(func() { close(fetching) })
			}
			if _, werr := up.Write([]byte(line)); err != nil || werr != nil {
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		chunk := buf[:n]
		select {
		case <-fetching:
			if stall {
				// Part of the reply's first line, up to the body's
				// literal: the client is mid-reply, not mid-literal.
				// (imapclient has a data race of its own when a
				// connection drops inside a literal.)
				cut := bytes.IndexByte(chunk, '{')
				if cut < 0 {
					cut = n / 2
				}
				down.Write(chunk[:cut])
				ev := proxyEvent{silent: time.Now()}
				<-gone // silent until the client hangs up
				ev.dropped = time.Now()
				p.mu.Lock()
				p.events = append(p.events, ev)
				p.mu.Unlock()
				return
			}
			for len(chunk) > 0 {
				k := min(len(chunk), 64)
				if _, err := down.Write(chunk[:k]); err != nil {
					return
				}
				chunk = chunk[k:]
				time.Sleep(p.trickle)
			}
		default:
			if _, err := down.Write(chunk); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *fetchProxy) stats() (conns int, events []proxyEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns, append([]proxyEvent(nil), p.events...)
}

// TestSilentServerMidFetch: a server that goes silent halfway through a
// FETCH is dropped CommandTimeout after its last byte (fetch.command_timeout,
// not a fixed two minutes); the worker reconnects and the mail becomes a
// ticket once.
func TestSilentServerMidFetch(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	var uids []imap.UID
	for i := 1; i <= 3; i++ {
		uids = append(uids, e.deliver(alice, i, false))
	}
	proxy := startFetchProxy(t, e.addr, 1, 0)
	o := e.options()
	o.IMAPAddr = proxy.l.Addr().String()
	o.CommandTimeout = 500 * time.Millisecond
	e.start(New(e.acc, e.st, o))

	waitFor(t, 10*time.Second, "3 tickets after the reconnect", func() bool { return e.ticketCount() == 3 })
	conns, events := proxy.stats()
	if len(events) != 1 || conns < 2 {
		t.Fatalf("proxy saw %d connections and stalls %+v, want one stall, then a new connection", conns, events)
	}
	// Generous upper bound: the guard's own timer and the scheduler add
	// milliseconds, not seconds.
	waited := events[0].dropped.Sub(events[0].silent)
	if waited < o.CommandTimeout-50*time.Millisecond || waited > o.CommandTimeout+2*time.Second {
		t.Errorf("silent server dropped after %v, want about fetch.command_timeout (%v)", waited, o.CommandTimeout)
	}
	t.Logf("silent server dropped %v after its last byte", waited.Round(time.Millisecond))
	e.wantOneCommentEach()
	for _, uid := range uids {
		if !e.gm.IsSeen(alice, uid) {
			t.Errorf("mail UID %d not \\Seen after its ticket was stored", uid)
		}
	}
}

// TestSlowFetchIsNotCut: the timeout counts silence, not the length of a
// command: a FETCH whose reply keeps coming, slowly, for longer than
// CommandTimeout finishes on its one connection.
func TestSlowFetchIsNotCut(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	for i := 1; i <= 5; i++ {
		e.deliver(alice, i, false)
	}
	proxy := startFetchProxy(t, e.addr, 0, 40*time.Millisecond)
	o := e.options()
	o.IMAPAddr = proxy.l.Addr().String()
	o.CommandTimeout = 400 * time.Millisecond
	start := time.Now()
	e.start(New(e.acc, e.st, o))
	waitFor(t, 20*time.Second, "5 tickets", func() bool { return e.ticketCount() == 5 })
	took := time.Since(start)
	if conns, _ := proxy.stats(); conns != 1 || e.gm.Logins(alice) != 1 {
		t.Errorf("%d connections, %d logins, want 1: a slow but steady reply must not be cut", conns, e.gm.Logins(alice))
	}
	if took < 2*o.CommandTimeout {
		t.Errorf("the trickled FETCH took %v, want well over CommandTimeout (%v) for this test to mean anything", took, o.CommandTimeout)
	}
}

// TestDialStartTLS: the fetcher dials the TCP connection itself (so that
// guard can hear it) and hands it to imapclient for STARTTLS, verifying
// the server by the host of IMAPAddr; a server silent before its greeting
// is dropped within CommandTimeout.
func TestDialStartTLS(t *testing.T) {
	ca, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return imapmemserver.New().NewSession(), nil, nil
		},
		TLSConfig: ca.ServerTLS(),
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	roots := &tls.Config{RootCAs: ca.Pool()} // no ServerName: taken from IMAPAddr

	s := &session{o: &Options{IMAPAddr: l.Addr().String(), TLSMode: tlsmode.StartTLS, TLSConfig: roots, CommandTimeout: 5 * time.Second},
		log: testLogger(t)}
	if err := s.dial(); err != nil {
		t.Fatalf("dial with STARTTLS: %v", err)
	}
	// Before TLS the server offers STARTTLS and refuses LOGIN; after, it
	// does neither.
	caps := s.c.Caps()
	s.close()
	if caps.Has(imap.CapStartTLS) || caps.Has(imap.CapLoginDisabled) {
		t.Errorf("capabilities after dial %v, want those of a TLS connection", caps)
	}

	// A server that accepts and never greets.
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mute.Close() })
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, mode := range []tlsmode.Mode{tlsmode.StartTLS, tlsmode.Implicit, tlsmode.Plain} {
		s := &session{o: &Options{IMAPAddr: mute.Addr().String(), TLSMode: mode, TLSConfig: roots, CommandTimeout: 300 * time.Millisecond},
			log: testLogger(t)}
		start := time.Now()
		err := s.whySilent(s.dial())
		if took := time.Since(start); !errors.Is(err, errSilent) || took > 3*time.Second {
			t.Errorf("%s to a server that never greets: %v after %v, want errSilent within about 300ms", mode, err, took)
		}
	}
}
