package fakegmail

import (
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/internal/imapline"
)

// DefaultMaxConnections is how many simultaneous IMAP connections Gmail
// allows one account; the next login gets ErrTooManyConnections.
const DefaultMaxConnections = 15

// Gmail's throttling replies, word for word. Tests hand them to
// SetFailLogin, SetFetchError or SetCommandError; ErrTooManyConnections is
// also what a login beyond Options.MaxConnections gets.
var (
	ErrTooManyConnections = &imap.Error{
		Type: imap.StatusResponseTypeNo,
		Code: imap.ResponseCodeAlert,
		Text: "Too many simultaneous connections. (Failure)",
	}
	// ErrThrottled: Gmail slows an account that sends too many commands;
	// its code is THROTTLED.
	ErrThrottled = &imap.Error{
		Type: imap.StatusResponseTypeNo,
		Code: "THROTTLED",
		Text: "Request throttled. (Failure)",
	}
	// ErrBandwidth: the account used its IMAP bandwidth (Google's limit is
	// 2500 MB downloaded a day); Gmail refuses until the usage ages out.
	ErrBandwidth = &imap.Error{
		Type: imap.StatusResponseTypeNo,
		Code: "OVERQUOTA",
		Text: "Account exceeded command or bandwidth limits. (Failure)",
	}
)

// maxConnections is Options.MaxConnections with its default.
func (s *Server) maxConnections() int {
	if s.opts.MaxConnections == 0 {
		return DefaultMaxConnections
	}
	return s.opts.MaxConnections
}

// SetCommandError makes every command on the account's logged-in
// connections fail with err (sent as is, e.g. ErrThrottled or ErrBandwidth)
// until called again with nil. LOGOUT, NOOP and CAPABILITY still work, as
// do commands carrying a literal (APPEND).
func (s *Server) SetCommandError(email string, err *imap.Error) error {
	a, aerr := s.account(email)
	if aerr != nil {
		return aerr
	}
	s.mu.Lock()
	a.commandErr = err
	s.mu.Unlock()
	return nil
}

// commandError returns the injected error for email's commands, or nil.
func (s *Server) commandError(email string) *imap.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[strings.ToLower(email)]; a != nil {
		return a.commandErr
	}
	return nil
}

// refuseCommand answers line with the account's injected command error,
// if there is one, and reports whether it did.
func (c *wireConn) refuseCommand(line []byte) bool {
	c.idMu.Lock()
	email := c.email
	c.idMu.Unlock()
	if email == "" || c.srv == nil {
		return false
	}
	ierr := c.srv.commandError(email)
	if ierr == nil {
		return false
	}
	if _, lit := imapline.LiteralLen(line); lit {
		return false
	}
	tag, rest, ok := strings.Cut(strings.TrimRight(string(line), "\r\n"), " ")
	if !ok || tag == "" || strings.ContainsAny(tag, "+*(){%\"\\]") {
		return false
	}
	cmd, _, _ := strings.Cut(rest, " ")
	switch strings.ToUpper(cmd) {
	case "LOGOUT", "NOOP", "CAPABILITY":
		return false
	}
	code := ""
	if ierr.Code != "" {
		code = "[" + string(ierr.Code) + "] "
	}
	c.inject(tag + " " + string(ierr.Type) + " " + code + ierr.Text + "\r\n")
	return true
}
