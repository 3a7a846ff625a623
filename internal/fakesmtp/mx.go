package fakesmtp

import (
	"crypto/tls"
	"log/slog"
	"maps"
	"strings"

	"github.com/emersion/go-smtp"
)

// The MX's own replies, in Postfix's words where Postfix has them.
var (
	// ErrNoSuchUser answers RCPT TO an address outside MXOptions.Domains;
	// pass it to FailRcpt for an unknown user inside them.
	ErrNoSuchUser = &smtp.SMTPError{
		Code:         550,
		EnhancedCode: smtp.EnhancedCode{5, 1, 1},
		Message:      "no such user",
	}
	// errMXAuthRequired answers MAIL before AUTH on a smarthost
	// (RFC 4954 section 6).
	errMXAuthRequired = &smtp.SMTPError{
		Code:         530,
		EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message:      "Authentication required",
	}
	errMXAuthFailed = &smtp.SMTPError{
		Code:         535,
		EnhancedCode: smtp.EnhancedCode{5, 7, 8},
		Message:      "Error: authentication failed: authentication failure",
	}
	mxAccepted = &smtp.SMTPError{
		Code:         235,
		EnhancedCode: smtp.EnhancedCode{2, 7, 0},
		Message:      "Authentication successful",
	}
)

// MXOptions configures NewMX.
type MXOptions struct {
	// Domains are the recipient domains the server accepts mail for; RCPT
	// TO any other domain gets ErrNoSuchUser. Empty accepts every
	// recipient, as a smarthost does.
	Domains []string
	// TLS, if set, makes the server offer STARTTLS. It is opportunistic,
	// as on a public MX: clients may also send in plaintext.
	TLS *tls.Config
	// Implicit makes the listener speak TLS from the first byte (a
	// port-465 smarthost). Needs TLS.
	Implicit bool
	// Users, if not empty, turns the server into a smarthost that requires
	// AUTH PLAIN or LOGIN with one of these user/password pairs before
	// MAIL. When TLS is set, AUTH is offered only after STARTTLS (like
	// Postfix's smtpd_tls_auth_only).
	Users map[string]string
	// SMTPUTF8 makes the server offer SMTPUTF8 (RFC 6531), as Postfix
	// 3 does; without it, it answers MAIL ... SMTPUTF8 with 504, and mail
	// to it must be downgraded to ASCII.
	SMTPUTF8 bool
	// Hostname is the name in the greeting; default "mx.test".
	Hostname string
	// Logger receives go-smtp's connection errors. Nil discards them.
	Logger *slog.Logger
}

// NewMX starts a fake recipient MX (or, with Users, a smarthost) on
// 127.0.0.1:0. It accepts a message with "250 2.0.0 Ok: queued as <ID>"
// and records it; FailRcpt, FailData and DropNext inject failures.
func NewMX(opts MXOptions) (*Server, error) {
	host := opts.Hostname
	if host == "" {
		host = "mx.test"
	}
	s, err := newServer(kindMX, opts.TLS, opts.Implicit, host, opts.Logger)
	if err != nil {
		return nil, err
	}
	s.domains = make(map[string]bool, len(opts.Domains))
	for _, d := range opts.Domains {
		s.domains[strings.ToLower(strings.TrimSuffix(d, "."))] = true
	}
	s.users = maps.Clone(opts.Users)
	s.srv.EnableSMTPUTF8 = opts.SMTPUTF8
	return s, nil
}
