package smtprelay

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testcert"
)

// rawClient is a raw TCP SMTP client: it writes bytes as the test says, at
// the pace the test says.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	text *textproto.Conn
}

// dialFrom connects to addr from the loopback address from (127.0.0.x), so
// one test can be several clients.
func dialFrom(t *testing.T, addr, from string) *rawClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawClient{t: t, conn: conn, text: textproto.NewConn(conn)}
}

// reply reads one (possibly multi-line) reply as "code text".
func (c *rawClient) reply() string {
	c.t.Helper()
	code, msg, err := c.text.ReadResponse(0)
	if err != nil && code == 0 {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(strconv.Itoa(code) + " " + msg)
}

// cmd sends a command line and returns the reply.
func (c *rawClient) cmd(line string) string {
	c.t.Helper()
	if err := c.text.PrintfLine("%s", line); err != nil {
		c.t.Fatalf("write %q: %v", line, err)
	}
	return c.reply()
}

// closed reports whether the server has closed the connection, reading
// whatever else it sends first.
func (c *rawClient) closed(within time.Duration) bool {
	c.conn.SetReadDeadline(time.Now().Add(within))
	for {
		if _, err := c.text.ReadLine(); err != nil {
			ne, ok := err.(net.Error)
			return !ok || !ne.Timeout()
		}
	}
}

// startTransaction gets a raw client to the 354 of DATA.
func (c *rawClient) startTransaction() {
	c.t.Helper()
	for _, step := range []struct{ line, want string }{
		{"EHLO client.test", "250"}, {"MAIL FROM:<support@acme.test>", "250"},
		{"RCPT TO:<alice@customer.test>", "250"}, {"DATA", "354"},
	} {
		if got := c.cmd(step.line); !strings.HasPrefix(got, step.want) {
			c.t.Fatalf("%s = %q, want %s", step.line, got, step.want)
		}
	}
}

// TestConnectionCaps: past the per-IP cap, and past relay.max_connections
// from any address, a new connection is answered 421 4.7.0 and closed; a
// closed connection gives its slot back.
func TestConnectionCaps(t *testing.T) {
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback, Limits: Limits{MaxConnections: 3, MaxPerIP: 2}})
	greet := func(c *rawClient) string { return c.reply() }

	a1, a2 := dialFrom(t, e.addr, "127.0.0.1"), dialFrom(t, e.addr, "127.0.0.1")
	for _, c := range []*rawClient{a1, a2} {
		if g := greet(c); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("greeting = %q, want 220", g)
		}
	}
	a3 := dialFrom(t, e.addr, "127.0.0.1")
	if g := greet(a3); !strings.HasPrefix(g, "421 4.7.0") || !strings.Contains(g, "relay.max_connections_per_ip") {
		t.Errorf("third connection from one address = %q, want 421 4.7.0 naming relay.max_connections_per_ip", g)
	}
	if !a3.closed(5 * time.Second) {
		t.Errorf("connection over the per-IP cap left open")
	}

	b1 := dialFrom(t, e.addr, "127.0.0.2")
	if g := greet(b1); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("another address under the total cap: greeting = %q, want 220", g)
	}
	c1 := dialFrom(t, e.addr, "127.0.0.3")
	if g := greet(c1); !strings.HasPrefix(g, "421 4.7.0") || !strings.Contains(g, "relay.max_connections ") {
		t.Errorf("connection cap+1 = %q, want 421 4.7.0 naming relay.max_connections", g)
	}
	if !c1.closed(5 * time.Second) {
		t.Errorf("connection over the total cap left open")
	}
	if got := e.server.LimitStats().Connections; got != 3 {
		t.Errorf("open connections = %d, want 3 (the refused ones hold no slot)", got)
	}

	if got := a1.cmd("QUIT"); !strings.HasPrefix(got, "221") {
		t.Fatalf("QUIT = %q", got)
	}
	waitFor(t, 10*time.Second, "the closed connection's slot", func() bool { return e.server.LimitStats().Connections == 2 })
	a4 := dialFrom(t, e.addr, "127.0.0.1")
	if g := greet(a4); !strings.HasPrefix(g, "220 ") {
		t.Errorf("after one closed, a new connection = %q, want 220", g)
	}
	if _, err := submit(t, e.addr, nil, "support@acme.test", []string{"alice@customer.test"}, notification); code(err) != 421 {
		t.Errorf("submit with every slot taken = %v, want a 421", err)
	}
}

// TestSlowlorisDataDropped: a client that sends its message one byte per
// 100 ms is dropped when the whole-DATA deadline passes, although every
// single read arrives well within it.
func TestSlowlorisDataDropped(t *testing.T) {
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback, Limits: Limits{DataTimeout: 700 * time.Millisecond}})
	c := dialFrom(t, e.addr, "127.0.0.1")
	c.reply()
	c.startTransaction()
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		msg := []byte("Subject: slow\r\n\r\n" + strings.Repeat("x", 200))
		for _, b := range msg {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := c.conn.Write([]byte{b}); err != nil {
				return
			}
		}
	}()
	defer close(stop)
	got := c.reply()
	if !strings.HasPrefix(got, "421 4.4.2") || !strings.Contains(got, "relay.client_data_timeout") {
		t.Errorf("slow DATA = %q, want 421 4.4.2 naming relay.client_data_timeout", got)
	}
	if !c.closed(5 * time.Second) {
		t.Errorf("connection left open after the DATA deadline")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("dropped after %s, want about the 700ms deadline", d)
	}
	if ms, _ := e.q.List(context.Background(), 10); len(ms) != 0 {
		t.Errorf("queue holds %d messages, want none from a dropped client", len(ms))
	}
	waitFor(t, 10*time.Second, "the slot and memory given back", func() bool {
		st := e.server.LimitStats()
		return st.Connections == 0 && st.DataBytes == 0
	})
}

// TestSlowCommandDropped: the command deadline covers the whole line, so a
// command sent one byte per 100 ms is cut when it passes.
func TestSlowCommandDropped(t *testing.T) {
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback, Limits: Limits{CommandTimeout: 500 * time.Millisecond}})
	c := dialFrom(t, e.addr, "127.0.0.1")
	c.reply()
	go func() {
		for _, b := range []byte("EHLO a-very-slow-client.test\r\n") {
			time.Sleep(100 * time.Millisecond)
			if _, err := c.conn.Write([]byte{b}); err != nil {
				return
			}
		}
	}()
	// The part of the line that came in time is answered as it stands
	// (go-smtp takes it for a whole line), then the connection ends.
	var got []string
	for r := c.reply(); ; r = c.reply() {
		got = append(got, r)
		if strings.HasPrefix(r, "421") || strings.HasPrefix(r, "error") || len(got) > 3 {
			break
		}
	}
	if last := got[len(got)-1]; !strings.HasPrefix(last, "421 4.4.2") || len(got) > 2 {
		t.Errorf("slow EHLO = %q, want 421 4.4.2 at the first read past the deadline", got)
	}
	if !c.closed(5 * time.Second) {
		t.Errorf("connection left open after the command deadline")
	}
}

// TestDataMemoryBound: eight large messages received in parallel never
// hold more than MaxDataInFlight between them; those that cannot get
// their share in time are answered 452 4.3.1 (the client retries), the
// others are queued.
func TestDataMemoryBound(t *testing.T) {
	const maxMsg = 200 << 10
	const budget = 3 * maxMsg
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback, MaxMessageBytes: maxMsg,
		Limits: Limits{MaxConnections: 20, MaxPerIP: 20, MaxDataInFlight: budget, MemoryWait: 2 * time.Second}})
	const n = 8
	body := strings.Repeat(strings.Repeat("y", 76)+"\r\n", 150<<10/78) // about 150 KiB
	msg := "From: support@acme.test\r\nSubject: big\r\n\r\n" + body
	half := len(msg) * 6 / 10

	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = dialFrom(t, e.addr, "127.0.0.1")
		clients[i].reply()
		clients[i].startTransaction()
	}
	// Every client sends 60% of its message and waits: together that is
	// more than the budget, so some reads must wait for memory.
	for _, c := range clients {
		if _, err := c.conn.Write([]byte(msg[:half])); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "more than one message's worth held", func() bool { return e.server.LimitStats().DataBytes > maxMsg })
	replies := make([]string, n)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.conn.Write([]byte(msg[half:] + ".\r\n"))
			replies[i] = c.reply()
		}()
	}
	wg.Wait()

	queued := 0
	for i, r := range replies {
		switch {
		case strings.HasPrefix(r, "250 "):
			queued++
		case strings.HasPrefix(r, "452 4.3.1"):
		default:
			t.Errorf("client %d: reply %q, want 250 or 452 4.3.1", i, r)
		}
	}
	st := e.server.LimitStats()
	if st.PeakDataBytes > budget {
		t.Errorf("peak message bytes held = %d, over the bound %d", st.PeakDataBytes, budget)
	}
	if st.PeakDataBytes <= maxMsg {
		t.Errorf("peak = %d: the messages were not received in parallel, the test proves nothing", st.PeakDataBytes)
	}
	if queued == 0 {
		t.Errorf("no message queued: the bound must slow mail down, not stop it")
	}
	if st.DataBytes != 0 {
		t.Errorf("message bytes still held after every reply: %d", st.DataBytes)
	}
	if ms, _ := e.q.List(context.Background(), 100); len(ms) != queued {
		t.Errorf("queue holds %d messages, want the %d answered 250", len(ms), queued)
	}
	t.Logf("%d of %d queued, peak %d of %d bytes", queued, n, st.PeakDataBytes, budget)
}

// TestSlowlorisDataDroppedAfterStartTLS: the DATA deadline holds under
// TLS too, where go-smtp's connection is a tls.Conn over the counted one.
func TestSlowlorisDataDroppedAfterStartTLS(t *testing.T) {
	ca, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback, TLS: ca.ServerTLS("relay.test"),
		Limits: Limits{DataTimeout: 700 * time.Millisecond}})
	c := dialFrom(t, e.addr, "127.0.0.1")
	c.reply()
	c.cmd("EHLO client.test")
	if got := c.cmd("STARTTLS"); !strings.HasPrefix(got, "220") {
		t.Fatalf("STARTTLS = %q", got)
	}
	tc := tls.Client(c.conn, ca.ClientTLS("relay.test"))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	c.conn, c.text = tc, textproto.NewConn(tc)
	c.startTransaction()
	go func() {
		for range 100 {
			time.Sleep(100 * time.Millisecond)
			if _, err := tc.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	if got := c.reply(); !strings.HasPrefix(got, "421 4.4.2") {
		t.Errorf("slow DATA over TLS = %q, want 421 4.4.2", got)
	}
	if !c.closed(5 * time.Second) {
		t.Errorf("TLS connection left open after the DATA deadline")
	}
}

// TestImplicitTLSCapClosesSilently: over the implicit-TLS listener a
// connection past the cap is closed without a handshake.
func TestImplicitTLSCapClosesSilently(t *testing.T) {
	ca, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback, TLS: ca.ServerTLS("relay.test"), Limits: Limits{MaxConnections: 1}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.server.ServeTLS(l)
	first, err := tls.Dial("tcp", l.Addr().String(), ca.ClientTLS("relay.test"))
	if err != nil {
		t.Fatalf("first implicit-TLS connection: %v", err)
	}
	defer first.Close()
	if line, err := textproto.NewReader(bufio.NewReader(first)).ReadLine(); err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("greeting = %q, %v", line, err)
	}
	second, err := tls.Dial("tcp", l.Addr().String(), ca.ClientTLS("relay.test"))
	if err == nil {
		second.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = second.Read(make([]byte, 1))
		second.Close()
	}
	if err == nil {
		t.Errorf("connection past the cap on the TLS listener was served")
	}
}
