package fakesmtp

import (
	"strings"

	"github.com/emersion/go-smtp"
)

// ErrTooManyLogins is Gmail's answer to AUTH when an account has logged in
// too often in a short time. Use it with SetAuthError.
var ErrTooManyLogins = &smtp.SMTPError{
	Code:         454,
	EnhancedCode: smtp.EnhancedCode{4, 7, 0},
	Message:      "Too many login attempts, please try again later. For more information, go to\n https://support.google.com/mail/answer/7126229",
}

// SetAuthError makes the Gmail fake answer every XOAUTH2 login as the
// account email (compared ignoring case) with err, before the token is
// looked at, until it is called with nil or Reset: ErrTooManyLogins, or
// ErrTryAgainLater, after which the connection is closed as Gmail does.
func (s *Server) SetAuthError(email string, err *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(email)
	if err == nil {
		delete(s.authErr, key)
		return
	}
	if s.authErr == nil {
		s.authErr = make(map[string]*smtp.SMTPError)
	}
	s.authErr[key] = err
}

// authError returns the error SetAuthError injected for user, or nil.
func (s *Server) authError(user string) *smtp.SMTPError {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authErr[strings.ToLower(user)]
}
