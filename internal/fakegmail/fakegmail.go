// Package fakegmail runs an in-process IMAP server that behaves like Gmail's where mailgate depends on it: XOAUTH2/OAUTHBEARER login with Gmail's error challenge, IDLE with a server-side cut-off, X-GM-EXT-1 (message and thread ids, X-GM-RAW search), and UID/flag semantics from go-imap's in-memory backend.
package fakegmail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// Inbox is the mailbox Deliver appends to.
const Inbox = "INBOX"

// SentMail is the name of a new account's Sent folder, as an English Gmail
// shows it; LIST marks it \Sent (RFC 6154). SetSentName renames it, as
// Gmail in another language names it.
const SentMail = "[Gmail]/Sent Mail"

// appendLimit is the APPENDLIMIT Gmail advertises (RFC 7889).
const appendLimit = 35651584

// Options configures a Server.
type Options struct {
	// Validate reports which account an OAuth access token grants access to.
	// A login succeeds only if ok is true and email matches, ignoring case,
	// the account named in the SASL exchange. Required.
	Validate func(accessToken string) (email string, ok bool)
	// TLS, if set, makes the listener speak implicit TLS like
	// imap.gmail.com:993. Nil means plaintext, for loopback use.
	TLS *tls.Config
	// IdleTimeout is how long one IDLE command may run before the server
	// sends "* BYE" and closes the connection. Gmail cuts IDLE off after
	// about 29 minutes (RFC 2177 section 3 lets servers log out idlers after
	// 30); tests set it small. Zero means no cut-off.
	IdleTimeout time.Duration
	// MaxConnections is how many connections one account may have logged
	// in at once; the next login gets ErrTooManyConnections, as from
	// Gmail. Zero means DefaultMaxConnections (15, Gmail's limit).
	MaxConnections int
	// Logger receives connection and login events. Nil discards them.
	Logger *slog.Logger
}

// Server is a fake Gmail IMAP server. Its methods are safe for concurrent use.
type Server struct {
	opts    Options
	log     *slog.Logger
	imap    *imapserver.Server
	connSeq atomic.Uint64 // for Gmail-style connection tokens

	// storeMu serialises what stores mail (Deliver, APPEND, COPY, MOVE)
	// with ResetUIDValidity, which briefly leaves an account without an
	// INBOX, and keeps the Gmail ids' bookkeeping in step with the UIDs.
	storeMu sync.Mutex

	mu          sync.Mutex
	accounts    map[string]*account // by lower-cased address
	connections int
	gmSeq       uint64 // X-GM-MSGIDs handed out
	listening   bool
	closed      bool
	serveDone   chan struct{}
}

// New returns a server that is not yet listening; call Listen or Start.
func New(opts Options) (*Server, error) {
	if opts.Validate == nil {
		return nil, errors.New("fakegmail: Options.Validate is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:     opts,
		log:      log,
		accounts: make(map[string]*account),
	}
	s.imap = imapserver.New(&imapserver.Options{
		NewSession: s.newSession,
		// IMAP4rev1 only, like Gmail, and the extensions of Gmail's list the
		// memory backend can honour. imapserver adds SASL-IR, LITERAL-,
		// IDLE, UNSELECT, ENABLE, UTF8=ACCEPT and (via session.AppendLimit)
		// APPENDLIMIT by itself; wireConn adds ID and LOGINDISABLED.
		Caps: imap.CapSet{
			imap.CapIMAP4rev1:    {},
			imap.CapNamespace:    {},
			imap.CapUIDPlus:      {},
			imap.CapMove:         {},
			imap.CapESearch:      {},
			imap.CapListExtended: {},
			imap.CapListStatus:   {},
			imap.CapSpecialUse:   {},
		},
		Logger: imapLogger{log},
		// Authentication is allowed on plaintext too: with Options.TLS the
		// connection is TLS underneath wireConn, which hides the *tls.Conn
		// imapserver would otherwise look for.
		InsecureAuth: true,
	})
	return s, nil
}

// Start listens on a random loopback port and returns its address.
func (s *Server) Start() (net.Addr, error) {
	return s.Listen("127.0.0.1:0")
}

// Listen starts serving on addr and returns the address actually bound.
// A server listens on one address at most.
func (s *Server) Listen(addr string) (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("fakegmail: server closed")
	}
	if s.listening {
		return nil, errors.New("fakegmail: already listening")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fakegmail: listen %s: %w", addr, err)
	}
	if s.opts.TLS != nil {
		ln = tls.NewListener(ln, s.opts.TLS)
	}
	s.listening = true
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.imap.Serve(wireListener{ln, s}); err != nil {
			s.log.Warn("fakegmail: serve", "err", err)
		}
	}()
	s.log.Info("fakegmail: listening", "addr", ln.Addr().String(), "tls", s.opts.TLS != nil)
	return ln.Addr(), nil
}

// Close stops the listener and drops every connection. It is safe to call
// more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	done := s.serveDone
	s.mu.Unlock()

	err := s.imap.Close()
	if done != nil {
		<-done
	}
	return err
}

// imapLogger sends imapserver's own messages to slog. They are mostly
// clients going away mid-command, hence Debug.
type imapLogger struct{ log *slog.Logger }

func (l imapLogger) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	level := slog.LevelDebug
	if strings.HasPrefix(msg, "panic") {
		level = slog.LevelError
	}
	l.log.Log(context.Background(), level, "fakegmail: imapserver", "detail", msg)
}
