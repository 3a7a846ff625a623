// Package fakesmtp runs in-process SMTP servers that behave like Gmail's
// submission server (smtp.gmail.com:587/465) and like a recipient MX or
// smarthost, recording what they receive, so the relay's routing, quota and
// retry logic can be tested without the internet.
//
// Both are go-smtp servers on a real listener on 127.0.0.1:0, modelled on
// maddy's internal/testutils SMTP server: every message is kept as a Message,
// and failures can be injected per recipient (FailRcpt), per transaction at
// the end of DATA (FailData/FailNext), per Gmail account (the daily sending
// limit) or as a dropped connection (DropNext). Each connection keeps a short
// protocol log (Transcript) that never contains tokens or passwords.
//
// Replies that go-smtp lets a backend choose are Gmail's (or, for the MX,
// Postfix's) word for word, including Gmail's "<id> - gsmtp" tail; the few
// that go-smtp writes itself (the greeting, EHLO, the 250 to MAIL and RCPT,
// 354) keep go-smtp's wording. See NewGmail for the details.
package fakesmtp

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one message a server accepted.
type Message struct {
	// From and To are the envelope (MAIL FROM and RCPT TO), as the client
	// sent them.
	From string
	To   []string
	// Data is the message as received, with CRLF line endings.
	Data []byte
	// AuthUser is the account the client authenticated as (for Gmail the
	// address the access token belongs to), or "".
	AuthUser string
	// TLS reports whether the transaction ran over TLS (STARTTLS or
	// implicit).
	TLS bool
	// Helo is the name the client gave in EHLO/HELO.
	Helo string
	// UTF8 reports whether the client said SMTPUTF8 on MAIL FROM.
	UTF8 bool
	// ID is the id in the final 250 reply: Gmail's "<conn>.<n>" token or the
	// MX's queue id.
	ID string
	// FromRewritten is set by the Gmail fake when it replaced the
	// message's From header, as Gmail does, by AuthUser's address: it was
	// neither AuthUser nor one of its verified "Send mail as" aliases
	// (GmailOptions.Aliases, SetAliases). Data is then the rewritten
	// message, as the recipient gets it; the relay must never cause this.
	FromRewritten bool
	// At is when the message was accepted.
	At time.Time
}

type kind int

const (
	kindGmail kind = iota
	kindMX
)

// Server is a running fake SMTP server. Its methods are safe for concurrent
// use.
type Server struct {
	kind     kind
	tlsOn    bool // a TLS config was given
	validate func(accessToken string) (email string, ok bool)
	aliases  map[string][]string               // Gmail: lower-case account → lower-case aliases
	sent     func(account string, data []byte) // Gmail: GmailOptions.Sent
	domains  map[string]bool                   // MX: lower-case recipient domains; empty = any
	users    map[string]string                 // MX: AUTH user → password

	srv       *smtp.Server
	addr      string
	served    chan struct{}
	conns     sync.WaitGroup
	closeOnce sync.Once

	mu        sync.Mutex
	received  []Message
	changed   chan struct{} // closed and replaced when received grows
	failData  []*smtp.SMTPError
	failRcpt  map[string]*smtp.SMTPError // lower-case address → error
	drops     int
	overLimit map[string]bool // Gmail: lower-case account → daily limit reached
	convs     []*conversation
	byConn    map[*smtp.Conn]*conversation
	nextQueue int

	authErr map[string]*smtp.SMTPError // Gmail: lower-case account → AUTH reply (SetAuthError)
}

// conversation is what the server remembers about one connection: it
// survives the new go-smtp Session that STARTTLS causes.
type conversation struct {
	token    string // Gmail's per-connection reply id
	replies  int
	sessions int
	tls      bool
	lines    []string
}

func newServer(k kind, tlsConfig *tls.Config, implicit bool, domain string, logger *slog.Logger) (*Server, error) {
	if implicit && tlsConfig == nil {
		return nil, errors.New("fakesmtp: Implicit needs a TLS config")
	}
	s := &Server{
		kind:      k,
		tlsOn:     tlsConfig != nil,
		served:    make(chan struct{}),
		changed:   make(chan struct{}),
		failRcpt:  make(map[string]*smtp.SMTPError),
		overLimit: make(map[string]bool),
		byConn:    make(map[*smtp.Conn]*conversation),
	}
	srv := smtp.NewServer(s)
	srv.Domain = domain
	srv.TLSConfig = tlsConfig
	// The sessions decide themselves when AUTH is allowed, so that AUTH
	// before STARTTLS gets Gmail's 530 rather than go-smtp's 523, and
	// EHLO lists AUTH only once TLS is up (see session.AuthMechanisms).
	srv.AllowInsecureAuth = true
	if logger != nil {
		srv.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelDebug)
	} else {
		srv.ErrorLog = log.New(io.Discard, "", 0)
	}
	s.srv = srv

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fakesmtp: listen: %w", err)
	}
	var ln net.Listener = &trackingListener{Listener: tcp, wg: &s.conns}
	if implicit {
		ln = tls.NewListener(ln, tlsConfig)
	}
	s.addr = tcp.Addr().String()
	go func() {
		defer close(s.served)
		srv.Serve(ln)
	}()
	return s, nil
}

// Addr returns the listener's address, "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

// Close stops the server, closes every connection and waits (briefly) for
// their goroutines to finish.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.srv.Close()
		<-s.served
		done := make(chan struct{})
		go func() {
			s.conns.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})
	return nil
}

// Received returns the messages accepted so far, oldest first.
func (s *Server) Received() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneMessages(s.received)
}

// Delivery is one recipient's copy of a message, named by the message's
// Message-ID (without angle brackets) and the recipient (lower case).
type Delivery struct{ MessageID, Rcpt string }

// Deliveries counts the copies accepted so far per recipient and
// Message-ID, so that a test tells a lost message (no entry) from one
// delivered twice to someone (2).
func (s *Server) Deliveries() map[Delivery]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := map[Delivery]int{}
	for _, m := range s.received {
		id := MessageID(m.Data)
		for _, rc := range m.To {
			n[Delivery{id, strings.ToLower(rc)}]++
		}
	}
	return n
}

// MessageID returns the Message-ID of a raw message, without angle
// brackets; "" when it has none.
func MessageID(raw []byte) string {
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return ""
	}
	return strings.Trim(m.Header.Get("Message-ID"), "<> ")
}

// WaitFor waits until at least n messages have been accepted or timeout has
// passed, and returns the messages accepted by then (fewer than n on
// timeout).
func (s *Server) WaitFor(n int, timeout time.Duration) []Message {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if len(s.received) >= n {
			defer s.mu.Unlock()
			return cloneMessages(s.received)
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			return s.Received()
		}
	}
}

// Reset forgets the received messages and transcripts and clears every
// injected failure and daily limit. Open connections stay open.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received = nil
	s.failData = nil
	s.failRcpt = make(map[string]*smtp.SMTPError)
	s.drops = 0
	s.overLimit = make(map[string]bool)
	s.authErr = nil
	s.convs = nil
	s.byConn = make(map[*smtp.Conn]*conversation)
}

// FailData makes the next n transactions that reach the end of DATA fail
// with err, after the message has been read (and not recorded). Calls add
// up; FailData(0, nil) clears the queue. A 421 reply also closes the
// connection, as RFC 5321 section 3.8 says a server does after sending it.
// The Gmail fake adds its "<id> - gsmtp" tail to err's last line.
func (s *Server) FailData(n int, err *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 || err == nil {
		s.failData = nil
		return
	}
	for range n {
		s.failData = append(s.failData, err)
	}
}

// FailNext is FailData: the next n transactions fail at the end of DATA,
// e.g. with ErrTryAgainLater.
func (s *Server) FailNext(n int, err *smtp.SMTPError) { s.FailData(n, err) }

// FailRcpt makes every RCPT TO for addr (compared ignoring case) fail with
// err until it is cleared with a nil err or Reset.
func (s *Server) FailRcpt(addr string, err *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(addr)
	if err == nil {
		delete(s.failRcpt, key)
		return
	}
	s.failRcpt[key] = err
}

// DropNext makes the next transaction that reaches the end of DATA lose its
// connection: the server reads the whole message, records nothing and closes
// the connection without a reply, so the client cannot tell whether the
// message was taken (the RFC 1047 duplicate-message case). Calls add up.
func (s *Server) DropNext() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drops++
}

// Transcript returns the protocol log of the most recent connection, or nil.
// See Transcripts.
func (s *Server) Transcript() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.convs) == 0 {
		return nil
	}
	return slices.Clone(s.convs[len(s.convs)-1].lines)
}

// Transcripts returns the protocol log of each connection since the start or
// the last Reset, oldest first. A log is a summary built by the session, not
// a byte capture: one "C: ..." line per client command (EHLO, STARTTLS, AUTH,
// MAIL, RCPT, DATA with its size) and the server's reply lines ("S: ...") as
// sent, multi-line replies one entry per line. AUTH shows the mechanism and
// user but never a token or password.
func (s *Server) Transcripts() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]string, len(s.convs))
	for i, c := range s.convs {
		out[i] = slices.Clone(c.lines)
	}
	return out
}

// SetAliases replaces the verified "Send mail as" addresses of a Gmail
// account (compared ignoring case), as an admin does in Gmail's settings.
func (s *Server) SetAliases(account string, aliases ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(account)
	s.aliases[key] = nil
	for _, a := range aliases {
		s.aliases[key] = append(s.aliases[key], strings.ToLower(a))
	}
}

// SetDailyLimitReached makes the Gmail fake answer every message from the
// account email (compared ignoring case) with ErrDailyLimit, as Gmail does
// once the account has used its rolling 24-hour quota, until it is set back
// to false or Reset is called.
func (s *Server) SetDailyLimitReached(email string, reached bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(email)
	if reached {
		s.overLimit[key] = true
	} else {
		delete(s.overLimit, key)
	}
}

// NewSession implements smtp.Backend. go-smtp calls it at the first EHLO and
// again at the first EHLO after STARTTLS.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	s.mu.Lock()
	conv := s.byConn[c]
	if conv == nil {
		conv = &conversation{token: randomToken()}
		s.byConn[c] = conv
		s.convs = append(s.convs, conv)
	}
	if isTLS && !conv.tls && conv.sessions > 0 {
		conv.lines = append(conv.lines, "C: STARTTLS", "S: 220 2.0.0 Ready to start TLS")
	}
	conv.tls = isTLS
	conv.sessions++
	conv.lines = append(conv.lines, "C: EHLO "+c.Hostname())
	s.mu.Unlock()
	return &session{s: s, c: c, conv: conv, tls: isTLS}, nil
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received = append(s.received, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

func cloneMessages(ms []Message) []Message {
	out := make([]Message, len(ms))
	for i, m := range ms {
		m.To = slices.Clone(m.To)
		m.Data = slices.Clone(m.Data)
		out[i] = m
	}
	return out
}

// trackingListener counts open connections so Close can wait for them.
type trackingListener struct {
	net.Listener
	wg *sync.WaitGroup
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.wg.Add(1)
	return &trackedConn{Conn: c, done: l.wg.Done}, nil
}

type trackedConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.done)
	return err
}
