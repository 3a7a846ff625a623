package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/mgproc"
	"github.com/mailgate/mailgate/internal/redistest"
)

// binary is the mailgate built once by TestMain, or "" when the
// integration tests are off.
var binary string

func TestMain(m *testing.M) {
	if os.Getenv("MG_INTEGRATION") != "1" {
		os.Exit(m.Run()) // every test skips
	}
	dir, err := os.MkdirTemp("", "mailgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	start := time.Now()
	if binary, err = mgproc.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "e2e: built mailgate in %s\n", time.Since(start).Round(100*time.Millisecond))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	prefix  = "mailgate:"
	account = "support@" + DKIMDomain
)

// world is one test's mailgate installation: Redis, the fakes, a
// configuration, and the serve processes started so far.
type world struct {
	t      *testing.T
	ctx    context.Context
	fakes  *Fakes
	redis  *redistest.Server
	rdb    *redis.Client
	acc    *accounts.Store
	config string
	relay  string      // relay.listen
	http   string      // http.listen
	mx     *stallProxy // relay.smarthost, in front of the fake MX
	serves int
}

func newWorld(t *testing.T, ctx context.Context, c Config) *world {
	t.Helper()
	if binary == "" {
		t.Skip("set MG_INTEGRATION=1 to build mailgate and run it end to end (scripts/test does)")
	}
	// A 250 from the relay is a promise only as good as Redis's fsync.
	rs := redistest.Start(t, "appendonly yes", "appendfsync always")
	fakes, err := StartFakes(t.TempDir())
	if err != nil {
		t.Fatalf("StartFakes: %v", err)
	}
	t.Cleanup(fakes.Close)
	w := &world{t: t, ctx: ctx, fakes: fakes, redis: rs, rdb: rs.Client(t)}
	w.acc = accounts.New(w.rdb, accounts.Options{Prefix: prefix})
	if w.relay, err = FreeAddr(); err != nil {
		t.Fatal(err)
	}
	httpAddr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	w.mx = newStallProxy(t, fakes.MX.Addr())
	w.http = httpAddr
	c.RedisURL, c.RelayListen, c.HTTPListen, c.Smarthost = rs.URL, w.relay, httpAddr, w.mx.Addr()
	if w.config, err = fakes.WriteConfig("mailgate.yaml", c); err != nil {
		t.Fatal(err)
	}
	return w
}

// mailgate runs a CLI command and returns its standard output.
func (w *world) mailgate(args ...string) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	out, _, err := mgproc.Run(ctx, binary, w.config, args...)
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// addAccount connects email the way an operator scripts it: a refresh
// token in a file, checked against (fake) Google.
func (w *world) addAccount(email string) {
	w.t.Helper()
	w.fakes.IMAP.AddUser(email)
	f := filepath.Join(w.fakes.Dir, email+".token")
	if err := os.WriteFile(f, []byte(w.fakes.OAuth.IssueRefreshToken(email)+"\n"), 0o600); err != nil {
		w.t.Fatal(err)
	}
	out := w.mailgate("accounts", "add", email, "--refresh-token-file", f, "--import-recent", "0", "--kind", "gmail")
	if !strings.Contains(out, "Connected "+email) {
		w.t.Fatalf("accounts add %s said %q, want Connected", email, out)
	}
}

// serve starts `mailgate serve`; its log is shown if the test fails, and
// it is killed at the end if still running.
func (w *world) serve(args ...string) *mgproc.Process {
	w.t.Helper()
	w.serves++
	name := fmt.Sprintf("serve-%d", w.serves)
	p, err := mgproc.StartServe(binary, w.config, filepath.Join(w.fakes.Dir, name+".log"), args...)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		if !p.Exited() {
			p.Kill()
		}
		if w.t.Failed() {
			w.t.Logf("---- %s log (pid %d) ----\n%s", name, p.Pid(), tail(p.Log(), 150))
		}
	})
	if err := p.WaitLog("mailgate serving", 15*time.Second); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// waitPolled waits until account has polled after since and returns when.
func (w *world) waitPolled(email string, since time.Time, timeout time.Duration) time.Time {
	w.t.Helper()
	var at time.Time
	w.eventually(timeout, "the first poll of "+email, func() bool {
		a, err := w.acc.Get(w.ctx, email)
		if err != nil {
			w.t.Fatal(err)
		}
		at = a.LastPoll
		return at.After(since)
	})
	return at
}

// eventually polls cond every 20ms until it is true, or fails the test.
func (w *world) eventually(timeout time.Duration, what string, cond func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-w.ctx.Done():
			w.t.Fatalf("waiting for %s: %v", what, w.ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines ...]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// event is one entry of the events stream, read by its documented fields
// (README, "Reading the queue") rather than through package tickets, as a
// helpdesk in another language would.
type event struct {
	ID        string
	Type      string
	Ticket    int64
	Comment   int64
	MessageID string
	Author    string
	// SuppressTriggers: the helpdesk must notify nobody.
	SuppressTriggers bool
	Data             string
}

func decodeEvent(m redis.XMessage) event {
	s := func(k string) string { v, _ := m.Values[k].(string); return v }
	e := event{ID: m.ID, Type: s("type"), MessageID: s("message_id"), Author: s("author"),
		SuppressTriggers: s("suppress_triggers") == "true", Data: s("data")}
	e.Ticket, _ = strconv.ParseInt(s("ticket"), 10, 64)
	e.Comment, _ = strconv.ParseInt(s("comment"), 10, 64)
	return e
}

// helpdesk reads the events stream through a consumer group, as the
// README tells a helpdesk to.
type helpdesk struct {
	w      *world
	stream string
}

func newHelpdesk(w *world) *helpdesk {
	w.t.Helper()
	h := &helpdesk{w: w, stream: prefix + "events"}
	if err := w.rdb.XGroupCreateMkStream(w.ctx, h.stream, "helpdesk", "0").Err(); err != nil {
		w.t.Fatalf("XGROUP CREATE: %v", err)
	}
	return h
}

// next reads and acknowledges events until one matches, and returns it.
func (h *helpdesk) next(timeout time.Duration, what string, match func(event) bool) event {
	h.w.t.Helper()
	deadline := time.Now().Add(timeout)
	var seen []string
	for time.Now().Before(deadline) {
		res, err := h.w.rdb.XReadGroup(h.w.ctx, &redis.XReadGroupArgs{
			Group: "helpdesk", Consumer: "worker-1", Streams: []string{h.stream, ">"}, Count: 10, Block: 200 * time.Millisecond,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			h.w.t.Fatalf("XREADGROUP: %v", err)
		}
		for _, s := range res {
			for _, m := range s.Messages {
				h.w.rdb.XAck(h.w.ctx, h.stream, "helpdesk", m.ID)
				e := decodeEvent(m)
				if match(e) {
					return e
				}
				seen = append(seen, fmt.Sprintf("%s ticket=%d message_id=%s", e.Type, e.Ticket, e.MessageID))
			}
		}
	}
	h.w.t.Fatalf("no %s event within %s; saw %q", what, timeout, seen)
	return event{}
}

// allEvents returns the whole stream.
func (w *world) allEvents() []event {
	w.t.Helper()
	ms, err := w.rdb.XRange(w.ctx, prefix+"events", "-", "+").Result()
	if err != nil {
		w.t.Fatalf("XRANGE: %v", err)
	}
	out := make([]event, len(ms))
	for i, m := range ms {
		out[i] = decodeEvent(m)
	}
	return out
}

// customerMail is a plain mail to the support address.
func customerMail(from, subject, msgID string, inReplyTo ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: Acme Support <%s>\r\nSubject: %s\r\n", from, account, subject)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%s>\r\n", time.Now().Format(time.RFC1123Z), msgID)
	if len(inReplyTo) > 0 {
		fmt.Fprintf(&b, "In-Reply-To: <%s>\r\nReferences: <%s>\r\n", inReplyTo[len(inReplyTo)-1], strings.Join(inReplyTo, "> <"))
	}
	fmt.Fprintf(&b, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n\r\nabout %s: please help.\r\n", subject)
	return b.Bytes()
}

// notification is what the helpdesk sends through the relay: from the
// account, threaded onto ticket, with a real attachment if attach (which
// Gmail SMTP is not used for: it goes direct, DKIM-signed).
func notification(to, subject, msgID string, ticket int64, attach bool, inReplyTo string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Acme Support <%s>\r\nTo: <%s>\r\nSubject: %s\r\n", account, to, subject)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%s>\r\nX-Mailgate-Ticket: %d\r\n", time.Now().Format(time.RFC1123Z), msgID, ticket)
	if inReplyTo != "" {
		fmt.Fprintf(&b, "In-Reply-To: <%s>\r\nReferences: <%s>\r\n", inReplyTo, inReplyTo)
	}
	b.WriteString("MIME-Version: 1.0\r\n")
	if !attach {
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\nThank you, we are on it.\r\n")
		return b.Bytes()
	}
	b.WriteString("Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n")
	b.WriteString("--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYour invoice, corrected.\r\n")
	b.WriteString("--b1\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	b.WriteString("JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg==\r\n--b1--\r\n")
	return b.Bytes()
}

// submit sends one message to the relay as the helpdesk does and returns
// the queue id from the 250 reply. replied reports whether the server
// answered the end of DATA at all (false: the outcome is unknown).
func submit(addr, from, to string, data []byte) (queueID string, replied bool, err error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return "", false, err
	}
	defer c.Close()
	if err := c.Hello("helpdesk.e2e.test"); err != nil {
		return "", false, err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", false, err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "", false, err
	}
	wc, err := c.Data()
	if err != nil {
		return "", false, err
	}
	if _, err := wc.Write(data); err != nil {
		return "", false, err
	}
	resp, err := wc.CloseWithResponse()
	if err != nil {
		var se *smtp.SMTPError
		return "", errors.As(err, &se), err
	}
	_ = c.Quit()
	_, id, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok {
		return "", true, fmt.Errorf("250 without a queue id: %q", resp.StatusText)
	}
	return strings.TrimSpace(id), true, nil
}

// messageID returns the Message-ID of raw, without brackets.
func messageID(raw []byte) string { return fakesmtp.MessageID(raw) }

// header returns the named header of raw.
func header(raw []byte, name string) string {
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return ""
	}
	return m.Header.Get(name)
}

// counter is a concurrency-safe tally.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[k]++
}

func (c *counter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

// stallProxy stands between the relay and the fake MX (relay.smarthost):
// it forwards connections, except that it holds the next StallNext ones
// silent — a mail server that hangs mid-delivery — until Release.
type stallProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	stall  int
	held   []net.Conn
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{l: l, target: target}
	t.Cleanup(func() { l.Close(); p.Release() })
	go p.serve()
	return p
}

func (p *stallProxy) Addr() string { return p.l.Addr().String() }

// StallNext makes the next n connections hang.
func (p *stallProxy) StallNext(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stall = n
}

// Held is how many connections are hanging now.
func (p *stallProxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.held)
}

// Release drops the hanging connections and stalls no more.
func (p *stallProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.held {
		c.Close()
	}
	p.held, p.stall = nil, 0
}

func (p *stallProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.stall > 0 {
			p.stall--
			p.held = append(p.held, c)
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				return
			}
			defer up.Close()
			go func() { io.Copy(up, c); up.Close() }()
			io.Copy(c, up)
		}()
	}
}
