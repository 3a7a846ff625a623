package smtprelay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/health"
)

// ServerOptions configure the SMTP listener the helpdesk submits to.
type ServerOptions struct {
	Hostname string
	// Users maps relay AUTH user names to bcrypt password hashes.
	Users map[string]string
	// AllowedNetworks may send without AUTH (the helpdesk's hosts).
	AllowedNetworks []netip.Prefix
	// AllowedSenders are extra envelope senders besides the support
	// addresses: whole addresses, or domains ("example.com").
	AllowedSenders []string
	// SupportAddresses returns the connected accounts and configured
	// support addresses, lower-cased.
	SupportAddresses func(ctx context.Context) ([]string, error)
	MaxRecipients    int
	MaxMessageBytes  int64
	TLS              *tls.Config // enables STARTTLS (and the implicit-TLS listener)
	Logger           *slog.Logger
	// Accepted is called after a message is queued, e.g. to register its
	// Message-ID with the ticket store; its failure does not fail the
	// transaction.
	Accepted func(ctx context.Context, m *Message)
	// AuthLimits bound password guessing; zero fields take defaults.
	AuthLimits AuthLimits
	// OnAccept, if set, is told of each message queued (accepted, "") and
	// of each refusal with its reason, one of the Reject* values; a failed
	// AUTH and a refused recipient address count as refusals too. For
	// metrics: it must not block.
	OnAccept func(accepted bool, reason string)
	// Limits bound connections, command and DATA time, and message memory.
	Limits Limits
	// StripReceived removes the Received fields a message arrives with
	// (the helpdesk's internal hops, with their host names and addresses)
	// before the relay adds its own.
	StripReceived bool
	// LookupAddr finds the client's reverse DNS name for the Received
	// field; nil uses the system resolver.
	LookupAddr func(ctx context.Context, addr string) ([]string, error)
}

// Why the relay refused a message, as told to ServerOptions.OnAccept.
const (
	RejectAuth   = "auth"   // no or failed AUTH, or AUTH without TLS
	RejectSender = "sender" // envelope sender not ours to relay
	// RejectHeaderFrom: an address in the header From not ours to send from.
	RejectHeaderFrom = "header_from"
	RejectHeader     = "header" // the message's header lacks what mail needs (a From field)
	RejectSize       = "size"   // over relay.max_message_bytes
	RejectQueue      = "queue"  // Redis unavailable: a 451, the helpdesk retries
	RejectData       = "data"   // DATA unreadable (line too long, connection cut)

	// RejectAddress: a MAIL FROM or RCPT TO address no route can deliver
	// (quoted local part, control characters, no valid domain...).
	RejectAddress = "address"
)

// Access is who may use the relay; SetAccess replaces it while serving.
type Access struct {
	Users           map[string]string // user name → bcrypt hash
	AllowedNetworks []netip.Prefix
	AllowedSenders  []string
}

// Server is the relay's SMTP side.
type Server struct {
	mu     sync.RWMutex
	access Access
	q      *Queue
	opts   ServerOptions
	srv    *smtp.Server
	log    *slog.Logger
	// Support-address lookups read Redis: one line when it stops
	// answering them and one when it is back, not one per MAIL.
	lookups *health.Reporter
	lim     *limiter
	guard   *authGuard  // failed-login counts and the bcrypt slots
	logged  *logLimiter // refusal lines per client address
}

// NewServer returns an SMTP server that queues what it accepts on q.
func NewServer(q *Queue, opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{q: q, opts: opts, log: opts.Logger,
		access: Access{Users: opts.Users, AllowedNetworks: opts.AllowedNetworks, AllowedSenders: opts.AllowedSenders}}
	srv := smtp.NewServer(s)
	srv.Domain = opts.Hostname
	srv.MaxRecipients = opts.MaxRecipients
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.TLSConfig = opts.TLS
	srv.EnableSMTPUTF8 = true // RFC 6531; see utf8.go for delivery
	// AUTH over plaintext is refused per connection (loopback is fine)
	// in Auth below; go-smtp's switch is all-or-nothing.
	srv.AllowInsecureAuth = true
	opts.Limits = opts.Limits.withDefaults(opts.MaxMessageBytes)
	// go-smtp sets this deadline once before each command line: it bounds
	// the whole line (limits.go).
	srv.ReadTimeout = opts.Limits.CommandTimeout
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = slogLogger{opts.Logger}
	s.srv = srv
	s.lim = newLimiter(opts.Limits, opts.Hostname, opts.Logger, s.tell)
	s.guard = newAuthGuard(opts.AuthLimits)
	s.logged = newLogLimiter()
	s.lookups = health.New(health.Options{Logger: opts.Logger, Part: "relay smtp", Dependency: "redis",
		Paused: "senders cannot be checked, so MAIL FROM is answered 451 and the helpdesk retries later"})
	return s
}

// SetAccess replaces the relay users, allowed networks and allowed senders
// (configuration reload); sessions already open keep what they had.
func (s *Server) SetAccess(a Access) {
	s.mu.Lock()
	s.access = a
	s.mu.Unlock()
}

func (s *Server) currentAccess() Access {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.access
}

// Serve accepts SMTP connections on l (STARTTLS offered when TLS is set).
func (s *Server) Serve(l net.Listener) error { return s.srv.Serve(s.lim.listener(l, true)) }

// ServeTLS accepts implicit-TLS connections (RFC 8314 submissions) on l.
func (s *Server) ServeTLS(l net.Listener) error {
	if s.opts.TLS == nil {
		return errors.New("relay.listen_tls needs relay.tls_cert and relay.tls_key")
	}
	return s.srv.Serve(tls.NewListener(s.lim.listener(l, false), s.opts.TLS))
}

// Shutdown stops accepting and waits for open sessions to end, until ctx
// is done; a transaction in DATA finishes (and is queued) first.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// NewSession implements smtp.Backend.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	remote, _ := netip.ParseAddrPort(c.Conn().RemoteAddr().String())
	ip := remote.Addr().Unmap()
	acc := s.currentAccess()
	sess := &session{s: s, conn: c, ip: ip, loopback: ip.IsLoopback(), access: acc}
	for _, p := range acc.AllowedNetworks {
		if p.Contains(ip) {
			sess.trusted = true
		}
	}
	if err := s.lockedOut(c, ip, sess.trusted); err != nil {
		return nil, err
	}
	return sess, nil
}

// tell reports an outcome to ServerOptions.OnAccept.
func (s *Server) tell(accepted bool, reason string) {
	if s.opts.OnAccept != nil {
		s.opts.OnAccept(accepted, reason)
	}
}

// session is one SMTP connection's state.
type session struct {
	s        *Server
	access   Access // as when the connection was opened
	conn     *smtp.Conn
	ip       netip.Addr
	loopback bool
	trusted  bool   // from relay.allowed_networks
	user     string // authenticated relay user
	from     string
	to       []string
	// authFailures counts failed AUTH on this connection.
	authFailures int
	utf8         bool    // the client said SMTPUTF8 on MAIL (RFC 6531)
	rdns         *string // the client's reverse DNS name, looked up once (trace)
}

var (
	errAuthNeeded = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Authentication required: log in with a relay user, or send from an address in relay.allowed_networks"}
	errEncryptionNeeded = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11},
		Message: "Encryption required for requested authentication mechanism: this relay has no TLS certificate (relay.tls_cert), so it takes AUTH only from loopback"} // RFC 4954 section 6
	errStartTLSFirst = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Must issue a STARTTLS command first"} // RFC 3207 section 4
	errQueueDown = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Requested action aborted: the queue is unavailable, try again later"}
)

// AuthMechanisms is asked for each EHLO reply: AUTH is advertised only
// where a password may be sent (RFC 4954 section 4: a server should not
// offer mechanisms it would refuse), so a client never sends one in clear.
func (x *session) AuthMechanisms() []string {
	if len(x.access.Users) == 0 || !x.authAllowed() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (x *session) Auth(mech string) (sasl.Server, error) {
	if !x.authAllowed() {
		// Refused before the first 334 challenge, so a client that did
		// not put its credentials on the AUTH line never sends them.
		return nil, x.refuse("AUTH", RejectAuth, x.s.encryptionNeeded())
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return x.refuse("AUTH", RejectAuth, smtp.ErrAuthFailed, "user", user, "authzid", identity)
			}
			return x.checkPassword(user, pass)
		}), nil
	case sasl.Login:
		return newLoginServer(x.checkPassword), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// authAllowed: passwords travel only encrypted, or over loopback where
// nobody can listen.
func authAllowed(isTLS, loopback bool) bool { return isTLS || loopback }

func (x *session) authAllowed() bool {
	_, isTLS := x.conn.TLSConnectionState()
	return authAllowed(isTLS, x.loopback)
}

// encryptionNeeded is the answer to AUTH before TLS: RFC 3207 section 4's
// 530 when STARTTLS is offered, else RFC 4954 section 6's 538 (the
// listener has no certificate: AUTH works only on loopback).
func (s *Server) encryptionNeeded() *smtp.SMTPError {
	if s.opts.TLS != nil {
		return errStartTLSFirst
	}
	return errEncryptionNeeded
}

func (x *session) Mail(from string, opts *smtp.MailOptions) error {
	if x.user == "" && !x.trusted {
		return x.refuse("MAIL", RejectAuth, errAuthNeeded)
	}
	// Syntax before policy: a malformed address is 553 5.1.7 whoever
	// sends it, and is never worth a look-up. The null reverse path is
	// well-formed; the policy below refuses it.
	x.utf8 = opts != nil && opts.UTF8
	if from != "" {
		if bad := checkSubmitted(from, true, x.utf8); bad != nil {
			return x.refuse("MAIL", RejectAddress, bad.reply())
		}
	}
	ok, err := x.senderAllowed(strings.ToLower(from))
	if err != nil { // logged by x.s.lookups
		return x.refuse("MAIL", RejectQueue, errQueueDown)
	}
	if !ok {
		return x.refuse("MAIL", RejectSender, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: fmt.Sprintf("Sender <%s> refused: not a support address nor in relay.allowed_senders (mailgate only relays the helpdesk's own mail)", from)})
	}
	x.from = from
	return nil
}

func (x *session) senderAllowed(from string) (bool, error) {
	if from == "" {
		return false, nil // the helpdesk never sends bounces through us
	}
	foreign, err := x.foreignAddress([]string{from})
	return foreign == "", err
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if x.from == "" {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL FROM first"}
	}
	if bad := checkSubmitted(to, false, x.utf8); bad != nil {
		return x.refuse("RCPT", RejectAddress, bad.reply())
	}
	x.to = append(x.to, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	r, done := x.s.lim.startData(x.conn.Conn(), r)
	defer done()
	data, err := io.ReadAll(r)
	if err != nil {
		// go-smtp's ErrDataTooLarge is a 552 5.3.4 SMTPError: pass it on.
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			reason := RejectData
			if se.Code == smtp.ErrDataTooLarge.Code {
				reason = RejectSize
			}
			return x.refuse("DATA", reason, se)
		}
		if errors.Is(err, smtp.ErrTooLongLine) {
			// RFC 5321 section 4.5.3.1.6: 1000 octets per line at most.
			return x.refuse("DATA", RejectData, &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Line too long: wrap lines or use quoted-printable/base64"})
		}
		return x.refuse("DATA", RejectData, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error reading the message: " + err.Error()})
	}
	// The header is read once, for the checks and for prepare. A From
	// field first (RFC 5322 section 3.6), then whose it is.
	hd := readHeader(data)
	if bad := checkFrom(hd); bad != nil {
		return x.refuse("DATA", RejectHeader, bad)
	}
	if err := x.checkHeaderFrom(hd); err != nil {
		return err
	}
	m := prepareRead(data, hd, x.from, x.to, x.s.opts.Hostname, time.Now(), x.trace())
	ctx, cancel := context.WithTimeout(context.Background(), x.s.q.AcceptTimeout())
	defer cancel()
	// Stored tentative, confirmed as the last step before the 250: after
	// a 451 (Redis too slow, or frozen and resumed later) the stored copy
	// is never delivered, so the helpdesk's retry is the only copy.
	if err := x.s.q.Accept(ctx, m); err != nil {
		// Temporary: the helpdesk keeps the message and tries again. A
		// 5xx would make it drop a message we never stored.
		return x.refuse("DATA", RejectQueue, errQueueDown, "queue_id", m.ID, "err", err.Error())
	}
	x.s.tell(true, "")
	x.s.log.Info("relay: queued", "queue_id", m.ID, "from", m.From, "rcpts", len(m.To), "size", m.Size, "ticket", m.Ticket)
	if x.s.opts.Accepted != nil {
		x.s.opts.Accepted(ctx, m)
	}
	m.Data = nil
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK: queued as " + m.ID}
}

func (x *session) Reset() { x.from, x.to = "", nil }

func (x *session) Logout() error { return nil }

// slogLogger adapts go-smtp's error log to slog.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Printf(format string, v ...any) { s.l.Warn("smtp: " + fmt.Sprintf(format, v...)) }
func (s slogLogger) Println(v ...any) {
	s.l.Warn("smtp: " + strings.TrimSpace(fmt.Sprintln(v...)))
}
