// Package fakegmail runs an in-process IMAP server that behaves like Gmail's where mailgate depends on it: XOAUTH2/OAUTHBEARER login with Gmail's error challenge, IDLE with a server-side cut-off, X-GM-EXT-1 (message and thread ids, X-GM-RAW search), and UID/flag semantics from go-imap's in-memory backend.
package fakegmail

import (
	"bytes"
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
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// Inbox is the mailbox Deliver appends to.
const Inbox = "INBOX"

// SentMail is the name of a new account's Sent folder, as an English Gmail
// shows it; LIST marks it \Sent (RFC 6154). SetSentName renames it, as
// Gmail in another language names it.
const SentMail = "[Gmail]/Sent Mail"

// appendLimit is the APPENDLIMIT Gmail advertises (RFC 7889).
const appendLimit = 35651584

// ErrUnknownAccount is returned by the account methods for an address that
// AddUser has not created.
var ErrUnknownAccount = errors.New("fakegmail: unknown account")

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

// account is one mailbox owner and the knobs tests turn on it.
type account struct {
	email     string
	user      *imapmemserver.User
	logins    int
	failLogin error
	fetchErr  error
	clientID  *imap.IDData
	sent      string                     // the name of the mailbox LIST marks \Sent
	sessions  map[*session]struct{}      // logged-in connections
	idlers    map[*session]chan struct{} // sessions in IDLE, woken on changes

	mostSessions int // the most logged-in connections at once

	// commandErr answers every command after login (SetCommandError).
	commandErr *imap.Error
	gm         *gmBook // X-GM-MSGID and X-GM-THRID of the stored mail
	// uidValidity is what SetUIDValidity chose, by mailbox name.
	uidValidity map[string]uint32
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

// AddUser creates an account with an empty INBOX and Sent folder. Adding an existing account
// does nothing. Addresses are compared without regard to case, as Gmail does.
func (s *Server) AddUser(email string) {
	key := strings.ToLower(email)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[key]; ok {
		return
	}
	// The password is never checked: LOGIN is refused before it gets here.
	u := imapmemserver.NewUser(email, "")
	if err := u.Create(Inbox, nil); err != nil {
		panic(fmt.Sprintf("fakegmail: create INBOX for new user: %v", err))
	}
	if err := u.Create(SentMail, nil); err != nil {
		panic(fmt.Sprintf("fakegmail: create Sent folder for new user: %v", err))
	}
	s.accounts[key] = &account{
		email:    email,
		user:     u,
		sent:     SentMail,
		sessions: make(map[*session]struct{}),
		idlers:   make(map[*session]chan struct{}),
		gm:       newGMBook(),
	}
}

func (s *Server) account(email string) (*account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[strings.ToLower(email)]
	if a == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownAccount, email)
	}
	return a, nil
}

// Deliver appends raw to the account's INBOX, as if it had just arrived, and
// returns its UID. Sessions with the INBOX selected are told about it (an
// EXISTS response, at once if they are in IDLE). The mail gets a new
// X-GM-MSGID and joins the conversation of a mail it references.
func (s *Server) Deliver(email string, raw []byte, seen bool) (imap.UID, error) {
	return s.deliver(email, raw, seen, 0)
}

func (s *Server) deliver(email string, raw []byte, seen bool, thrID uint64) (imap.UID, error) {
	a, err := s.account(email)
	if err != nil {
		return 0, err
	}
	opts := &imap.AppendOptions{Time: time.Now()}
	if seen {
		opts.Flags = []imap.Flag{imap.FlagSeen}
	}
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	// bytes.Reader has the Size method imap.LiteralReader wants.
	data, err := a.user.Append(Inbox, bytes.NewReader(raw), opts)
	if err != nil {
		return 0, fmt.Errorf("fakegmail: deliver to %s: %w", email, err)
	}
	s.file(a, Inbox, data.UID, s.newIDs(a, raw, thrID))
	s.wake(a)
	s.log.Debug("fakegmail: delivered", "account", email, "uid", uint32(data.UID))
	return data.UID, nil
}

// inbox runs f with a private view of the account's INBOX, through the same
// code paths an IMAP session uses.
func (s *Server) inbox(email string, f func(sess *imapmemserver.UserSession, sel *imap.SelectData) error) error {
	a, err := s.account(email)
	if err != nil {
		return err
	}
	sess := imapmemserver.NewUserSession(a.user)
	defer sess.Close()
	sel, err := sess.Select(Inbox, nil)
	if err != nil {
		return fmt.Errorf("fakegmail: select %s INBOX: %w", email, err)
	}
	return f(sess, sel)
}

// Flags returns the flags of the INBOX message with the given UID, or nil if
// there is no such message (or account).
func (s *Server) Flags(email string, uid imap.UID) []imap.Flag {
	var flags []imap.Flag
	_ = s.inbox(email, func(sess *imapmemserver.UserSession, sel *imap.SelectData) error {
		has := func(flag imap.Flag) bool {
			c := &imap.SearchCriteria{UID: []imap.UIDSet{imap.UIDSetNum(uid)}}
			if flag != "" {
				c.Flag = []imap.Flag{flag}
			}
			data, err := sess.Search(imapserver.NumKindUID, c, &imap.SearchOptions{})
			return err == nil && data.Count > 0
		}
		if !has("") {
			return nil
		}
		// The memory backend only exposes flags through SEARCH; the
		// mailbox's FLAGS list says which ones are worth asking about.
		flags = []imap.Flag{}
		for _, f := range sel.Flags {
			if has(f) {
				// The backend stores flags lower-cased; Gmail reports
				// system flags as \Seen etc.
				for _, sf := range systemFlags {
					if strings.EqualFold(string(f), string(sf)) {
						f = sf
					}
				}
				flags = append(flags, f)
			}
		}
		return nil
	})
	return flags
}

// IsSeen reports whether the INBOX message with the given UID has \Seen.
func (s *Server) IsSeen(email string, uid imap.UID) bool {
	for _, f := range s.Flags(email, uid) {
		if strings.EqualFold(string(f), string(imap.FlagSeen)) {
			return true
		}
	}
	return false
}

// Count returns the number of messages in the account's INBOX.
func (s *Server) Count(email string) int {
	n := 0
	_ = s.inbox(email, func(_ *imapmemserver.UserSession, sel *imap.SelectData) error {
		n = int(sel.NumMessages)
		return nil
	})
	return n
}

// UIDValidity returns the account's current INBOX UIDVALIDITY, or 0 for an
// unknown account. It stays the same until ResetUIDValidity.
func (s *Server) UIDValidity(email string) uint32 {
	var v uint32
	_ = s.inbox(email, func(_ *imapmemserver.UserSession, sel *imap.SelectData) error {
		a, _ := s.account(email)
		v = s.shownUIDValidity(a, Inbox, sel.UIDValidity)
		return nil
	})
	return v
}

// ResetUIDValidity gives the account's INBOX a new UIDVALIDITY, keeping its
// messages and flags but renumbering their UIDs from 1, which is what a
// client sees when Gmail rebuilds a mailbox (RFC 3501 section 2.3.1.1). The
// account's connections are dropped first, so clients must reconnect and
// re-select to notice. It returns the new UIDVALIDITY.
func (s *Server) ResetUIDValidity(email string) (uint32, error) {
	a, err := s.account(email)
	if err != nil {
		return 0, err
	}
	s.Disconnect(email)

	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	// The memory backend bumps UIDVALIDITY for every mailbox created, so
	// recreate INBOX and copy the messages over from the old one.
	const old = "fakegmail-old-inbox"
	if err := a.user.Rename(Inbox, old, nil); err != nil {
		return 0, fmt.Errorf("fakegmail: reset uidvalidity for %s: %w", email, err)
	}
	if err := a.user.Create(Inbox, nil); err != nil {
		return 0, fmt.Errorf("fakegmail: reset uidvalidity for %s: %w", email, err)
	}
	sess := imapmemserver.NewUserSession(a.user)
	if _, err := sess.Select(old, nil); err != nil {
		return 0, fmt.Errorf("fakegmail: reset uidvalidity for %s: %w", email, err)
	}
	var all imap.SeqSet
	all.AddRange(1, 0) // 1:*
	copied, err := sess.Copy(all, Inbox)
	sess.Close()
	if err != nil {
		return 0, fmt.Errorf("fakegmail: reset uidvalidity for %s: %w", email, err)
	}
	if err := a.user.Delete(old); err != nil {
		return 0, fmt.Errorf("fakegmail: reset uidvalidity for %s: %w", email, err)
	}
	s.renumbered(a, Inbox, copied.SourceUIDs, copied.DestUIDs)
	s.mu.Lock()
	delete(a.uidValidity, Inbox)
	s.mu.Unlock()
	s.log.Info("fakegmail: uidvalidity reset", "account", email, "uidvalidity", copied.UIDValidity)
	return copied.UIDValidity, nil
}

// SetFailLogin makes every login to the account fail with err, before the
// token is looked at, until called again with nil. An *imap.Error is sent as
// is (e.g. NO [ALERT] Too many simultaneous connections. (Failure)); any
// other error becomes a tagged NO with its text.
func (s *Server) SetFailLogin(email string, err error) error {
	a, aerr := s.account(email)
	if aerr != nil {
		return aerr
	}
	s.mu.Lock()
	a.failLogin = err
	s.mu.Unlock()
	return nil
}

// SetFetchError makes every FETCH on the account fail with err (mapped as in
// SetFailLogin) until called again with nil.
func (s *Server) SetFetchError(email string, err error) error {
	a, aerr := s.account(email)
	if aerr != nil {
		return aerr
	}
	s.mu.Lock()
	a.fetchErr = err
	s.mu.Unlock()
	return nil
}

// Logins returns how many times someone has logged in to the account.
func (s *Server) Logins(email string) int {
	a, err := s.account(email)
	if err != nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return a.logins
}

// MostSessions returns the most logged-in connections the account had at
// once: more than one means two readers of one mailbox.
func (s *Server) MostSessions(email string) int {
	a, err := s.account(email)
	if err != nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return a.mostSessions
}

// Connections returns how many connections the server has accepted.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connections
}

// ClientID returns the most recent RFC 2971 ID parameters sent by a client
// that was, or then became, logged in to the account; nil if none did.
func (s *Server) ClientID(email string) *imap.IDData {
	a, err := s.account(email)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.clientID == nil {
		return nil
	}
	id := *a.clientID
	return &id
}

// Disconnect sends "* BYE" to every connection logged in to the account and
// closes them, as Gmail does when it drops a session. It returns how many
// connections it closed.
func (s *Server) Disconnect(email string) int {
	a, err := s.account(email)
	if err != nil {
		return 0
	}
	s.mu.Lock()
	sessions := make([]*session, 0, len(a.sessions))
	for sess := range a.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		_ = sess.conn.Bye("Session terminated, please log in again")
	}
	return len(sessions)
}

// wake tells the account's IDLE sessions to look for mailbox updates.
func (s *Server) wake(a *account) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range a.idlers {
		select {
		case ch <- struct{}{}:
		default: // already pending
		}
	}
}

func (s *Server) setClientID(email string, id *imap.IDData) {
	a, err := s.account(email)
	if err != nil {
		return
	}
	s.mu.Lock()
	a.clientID = id
	s.mu.Unlock()
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
