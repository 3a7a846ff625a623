// This file holds the accounts: creating one, the knobs a test turns on it
// (failing logins or FETCH), what it reads back (logins, sessions, client
// ID), and reaching its connections (Disconnect, waking IDLE).

package fakegmail

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// ErrUnknownAccount is returned by the account methods for an address that
// AddUser has not created.
var ErrUnknownAccount = errors.New("fakegmail: unknown account")

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
