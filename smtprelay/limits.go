package smtprelay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/sync/semaphore"
)

// Limits bound what the relay's clients can hold: connections, time, and
// the memory of the messages being received. Zero values take the
// defaults.
type Limits struct {
	// MaxConnections is the most connections open at once from all
	// clients; one more is answered 421 4.7.0 and closed. Default 100.
	MaxConnections int
	// MaxPerIP is the most connections open at once from one client
	// address, so one host cannot take every slot. Default 10.
	MaxPerIP int
	// CommandTimeout bounds the whole of one command line, from when the
	// relay starts waiting for it to its CRLF: an idle client, or one that
	// sends a byte now and then, is dropped with 421 4.4.2. It is one
	// deadline per line, not a silence timer that each byte restarts.
	// Default 5m, the server's wait in RFC 5321 section 4.5.3.2.7.
	CommandTimeout time.Duration
	// DataTimeout bounds the whole message, from the 354 to the final dot
	// (or all BDAT chunks); past it the client gets 421 4.4.2 and the
	// connection is closed. Default 10m: 25 MB at 350 kbit/s.
	DataTimeout time.Duration
	// MaxDataInFlight bounds the message bytes held while being received,
	// over all connections at once. Default 4 × MaxMessageBytes.
	MaxDataInFlight int64
	// MemoryWait is the longest a message waits for its share of
	// MaxDataInFlight before it is refused with 452 4.3.1 (try later);
	// each wait is between half of it and all of it. Default 5s.
	MemoryWait time.Duration
}

// RejectBusy: a connection over relay.max_connections or the per-IP cap,
// or a message refused because too much mail was being received at once.
const RejectBusy = "busy"

// dataChunk is the most one read of a message reserves at a time.
const dataChunk = 64 << 10

func (l Limits) withDefaults(maxMessage int64) Limits {
	if l.MaxConnections <= 0 {
		l.MaxConnections = 100
	}
	if l.MaxPerIP <= 0 {
		l.MaxPerIP = 10
	}
	if l.CommandTimeout <= 0 {
		l.CommandTimeout = 5 * time.Minute
	}
	if l.DataTimeout <= 0 {
		l.DataTimeout = 10 * time.Minute
	}
	if l.MaxDataInFlight <= 0 {
		l.MaxDataInFlight = 4 * maxMessage
	}
	if l.MaxDataInFlight <= 0 {
		l.MaxDataInFlight = 100 << 20
	}
	if l.MemoryWait <= 0 {
		l.MemoryWait = 5 * time.Second
	}
	return l
}

// LimitStats is what the limits hold now, for tests and metrics.
type LimitStats struct {
	Connections int
	// DataBytes is the message bytes reserved now; PeakDataBytes the
	// most ever, never above Limits.MaxDataInFlight.
	DataBytes, PeakDataBytes int64
}

// limiter counts connections and message memory for one Server.
type limiter struct {
	lim      Limits
	hostname string
	log      *slog.Logger
	tell     func(accepted bool, reason string)

	mu    sync.Mutex
	open  int
	perIP map[netip.Addr]int
	// Refusals are logged at most once per logEvery, with a count, so a
	// flood of connections cannot flood the log.
	lastLog    time.Time
	suppressed int

	mem        *semaphore.Weighted
	held, peak atomic.Int64
}

const logEvery = 10 * time.Second

func newLimiter(lim Limits, hostname string, log *slog.Logger, tell func(bool, string)) *limiter {
	return &limiter{lim: lim, hostname: hostname, log: log, tell: tell,
		perIP: map[netip.Addr]int{}, mem: semaphore.NewWeighted(lim.MaxDataInFlight)}
}

func (l *limiter) stats() LimitStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return LimitStats{Connections: l.open, DataBytes: l.held.Load(), PeakDataBytes: l.peak.Load()}
}

// admit takes a connection slot for ip, or says why there is none.
func (l *limiter) admit(ip netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.open >= l.lim.MaxConnections:
		return fmt.Sprintf("too many connections (relay.max_connections %d)", l.lim.MaxConnections)
	case l.perIP[ip] >= l.lim.MaxPerIP:
		return fmt.Sprintf("too many connections from %s (relay.max_connections_per_ip %d)", ip, l.lim.MaxPerIP)
	}
	l.open++
	l.perIP[ip]++
	return ""
}

func (l *limiter) leave(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}

// refuse answers a connection over a cap and closes it. Over implicit TLS
// it closes without a word: a handshake would spend the CPU the cap saves.
func (l *limiter) refuse(c net.Conn, ip netip.Addr, why string, plain bool) {
	if plain {
		// RFC 5321 section 3.8: a server may answer 421 and close at once.
		c.SetWriteDeadline(time.Now().Add(time.Second))
		fmt.Fprintf(c, "421 4.7.0 %s %s, try again later\r\n", l.hostname, why)
	}
	c.Close()
	l.tell(false, RejectBusy)
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.lastLog) < logEvery {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	n := l.suppressed
	l.lastLog, l.suppressed = now, 0
	l.mu.Unlock()
	l.log.Warn("relay: connection refused: "+why, "remote", ip.String(), "suppressed", n)
}

// listener wraps l so that each connection takes a slot, and gives it back
// when closed. plain says the connections speak SMTP in clear.
func (l *limiter) listener(ln net.Listener, plain bool) net.Listener {
	return &limitListener{Listener: ln, l: l, plain: plain}
}

type limitListener struct {
	net.Listener
	l     *limiter
	plain bool
}

func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		ip := ap.Addr().Unmap()
		if why := ll.l.admit(ip); why != "" {
			ll.l.refuse(c, ip, why, ll.plain)
			continue
		}
		return &limitConn{Conn: c, l: ll.l, ip: ip}, nil
	}
}

// limitConn is one admitted connection. go-smtp sets a read deadline
// before each command line; while a message is being received, those are
// held to the DATA deadline, and once a deadline has passed they stay
// passed, so the connection ends.
type limitConn struct {
	net.Conn
	l    *limiter
	ip   netip.Addr
	once sync.Once

	mu      sync.Mutex
	dataEnd time.Time // zero outside a message
	expired bool
}

// Read marks the connection expired once a deadline has passed. go-smtp
// reads lines through bufio, which hands a line cut by the deadline on as
// if it were whole and drops the error; the next read then fails at once,
// and go-smtp answers 421 4.4.2 and closes, instead of reading the rest
// of a slow client's bytes under a fresh deadline.
func (c *limitConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.mu.Lock()
		c.expired = true
		c.mu.Unlock()
	}
	return n, err
}

func (c *limitConn) Close() error {
	c.once.Do(func() { c.l.leave(c.ip) })
	return c.Conn.Close()
}

func (c *limitConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *limitConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *limitConn) clamp(t time.Time) time.Time {
	switch {
	case c.expired:
		return time.Unix(1, 0)
	case !c.dataEnd.IsZero() && (t.IsZero() || t.After(c.dataEnd)):
		return c.dataEnd
	}
	return t
}

func (c *limitConn) startData(end time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dataEnd = end
	c.Conn.SetReadDeadline(c.clamp(end))
}

func (c *limitConn) endData() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dataEnd = time.Time{}
}

// asLimitConn finds the limitConn under a go-smtp connection (under TLS
// after STARTTLS or on the implicit-TLS listener); nil if there is none.
func asLimitConn(c net.Conn) *limitConn {
	for {
		switch v := c.(type) {
		case *limitConn:
			return v
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

var (
	errDataTimeout = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
		Message: "Message not received within relay.client_data_timeout, closing connection"}
	errMemoryBusy = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
		Message: "Too much mail being received at once, try again shortly"} // RFC 3463: mail system full
)

// startData starts the DATA deadline on conn and returns r reading under
// the memory bound, and the function that ends both once the message is
// handled (it gives back the memory the message held).
func (l *limiter) startData(conn net.Conn, r io.Reader) (io.Reader, func()) {
	d := &dataReader{r: r, l: l, lc: asLimitConn(conn)}
	if d.lc != nil {
		d.lc.startData(time.Now().Add(l.lim.DataTimeout))
	}
	return d, d.done
}

// dataReader reserves each chunk of the message from the shared memory
// budget before reading it, so the bytes held by all messages being
// received never exceed Limits.MaxDataInFlight.
type dataReader struct {
	r    io.Reader
	l    *limiter
	lc   *limitConn
	held int64
}

func (d *dataReader) Read(p []byte) (int, error) {
	n := min(int64(len(p)), dataChunk, d.l.lim.MaxDataInFlight)
	if n == 0 {
		return 0, nil
	}
	if !d.l.mem.TryAcquire(n) {
		// Each reader waits between half and all of MemoryWait: partly
		// received messages that all wait for memory none of them can
		// free would otherwise all give up at the same moment; spread
		// out, the first to give up frees its bytes for the others.
		wait := d.l.lim.MemoryWait/2 + rand.N(d.l.lim.MemoryWait/2+1)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err := d.l.mem.Acquire(ctx, n)
		cancel()
		if err != nil {
			d.l.tell(false, RejectBusy)
			return 0, errMemoryBusy
		}
	}
	got, err := d.r.Read(p[:n])
	d.l.mem.Release(n - int64(got))
	d.held += int64(got)
	d.l.notePeak(d.l.held.Add(int64(got)))
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return got, errDataTimeout
	}
	return got, err
}

// notePeak keeps the most bytes ever held.
func (l *limiter) notePeak(now int64) {
	for {
		peak := l.peak.Load()
		if now <= peak || l.peak.CompareAndSwap(peak, now) {
			return
		}
	}
}

func (d *dataReader) done() {
	d.l.mem.Release(d.held)
	d.l.held.Add(-d.held)
	d.held = 0
	if d.lc != nil {
		d.lc.endData()
	}
}

// LimitStats says what the connection and memory limits hold now.
func (s *Server) LimitStats() LimitStats { return s.lim.stats() }
