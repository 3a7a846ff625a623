package fakegmail

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
)

// idleByeText is sent when Options.IdleTimeout ends an IDLE. Gmail's own
// wording is not documented; clients must not depend on it.
const idleByeText = "IDLE timed out, please reconnect"

// session is one IMAP connection. Until login it has no UserSession; after
// it, mailbox commands go to the memory backend, with Gmail's differences
// layered on top.
type session struct {
	*imapmemserver.UserSession // nil until authenticated

	srv  *Server
	conn *imapserver.Conn
	wire *wireConn // nil only if a listener other than wireListener is used
	acct *account  // nil until authenticated

	selected string // the selected mailbox, "" if none
}

var (
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionSASL        = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
)

func (s *Server) newSession(conn *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	wire, _ := conn.NetConn().(*wireConn)
	s.mu.Lock()
	s.connections++
	s.mu.Unlock()
	s.log.Debug("fakegmail: connection", "remote", conn.NetConn().RemoteAddr().String())
	return &session{srv: s, conn: conn, wire: wire}, nil, nil
}

func (sess *session) Close() error {
	if sess.acct != nil {
		sess.srv.mu.Lock()
		delete(sess.acct.sessions, sess)
		sess.srv.mu.Unlock()
	}
	return sess.UserSession.Close()
}

// Login refuses LOGIN, which LOGINDISABLED already told the client. Gmail
// would accept an app password here; mailgate only speaks OAuth.
func (sess *session) Login(username, password string) error {
	sess.srv.log.Info("fakegmail: LOGIN refused", "account", username)
	return errInvalidCredentials
}

// AuthenticateMechanisms lists the OAuth mechanisms Gmail offers (it also
// offers PLAIN, PLAIN-CLIENTTOKEN and the retired XOAUTH).
func (sess *session) AuthenticateMechanisms() []string {
	return []string{mechXOAUTH2, sasl.OAuthBearer}
}

func (sess *session) Authenticate(mech string) (sasl.Server, error) {
	switch mech {
	case mechXOAUTH2:
		return &xoauth2Server{auth: sess.authenticate}, nil
	case sasl.OAuthBearer:
		return newOAuthBearerServer(sess.authenticate), nil
	}
	return nil, &imap.Error{
		Type: imap.StatusResponseTypeNo,
		Text: "Unsupported authentication mechanism.",
	}
}

// authenticate checks an OAuth bearer token for user. It returns
// errBadToken when Gmail would answer with its error challenge, and other
// errors (from SetFailLogin) to be sent as the tagged response.
func (sess *session) authenticate(user, token string) error {
	srv := sess.srv
	srv.mu.Lock()
	acct := srv.accounts[strings.ToLower(user)]
	var failLogin error
	if acct != nil {
		failLogin = acct.failLogin
	}
	srv.mu.Unlock()

	if failLogin != nil {
		srv.log.Info("fakegmail: login failed (injected)", "account", user)
		return asIMAPError(failLogin)
	}
	email, ok := srv.opts.Validate(token)
	if acct == nil || !ok || !strings.EqualFold(email, user) {
		srv.log.Info("fakegmail: login rejected", "account", user, "known", acct != nil, "token_valid", ok)
		return errBadToken
	}

	srv.mu.Lock()
	if len(acct.sessions) >= srv.maxConnections() {
		srv.mu.Unlock()
		srv.log.Info("fakegmail: login refused: too many connections", "account", acct.email)
		return ErrTooManyConnections
	}
	acct.logins++
	acct.sessions[sess] = struct{}{}
	acct.mostSessions = max(acct.mostSessions, len(acct.sessions))
	srv.mu.Unlock()
	sess.acct = acct
	sess.UserSession = imapmemserver.NewUserSession(acct.user)
	if sess.wire != nil {
		sess.wire.loggedIn(acct.email)
	}
	srv.log.Info("fakegmail: login", "account", acct.email)
	return nil
}

// AppendLimit is Gmail's advertised APPENDLIMIT.
func (sess *session) AppendLimit() uint32 { return appendLimit }

// Idle waits for mailbox changes and sends them, and ends the connection
// after Options.IdleTimeout as Gmail does.
//
// It does not use the memory backend's own IDLE: that registers for
// notifications only after imapserver has sent "+ idling", so a message
// delivered in between is not announced until the client sends DONE. Here
// the session registers first and then sends whatever is already queued.
func (sess *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	srv := sess.srv
	wake := make(chan struct{}, 1)
	srv.mu.Lock()
	sess.acct.idlers[sess] = wake
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		delete(sess.acct.idlers, sess)
		srv.mu.Unlock()
	}()

	var cutoff <-chan time.Time
	if d := srv.opts.IdleTimeout; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		cutoff = t.C
	}
	for {
		if err := sess.UserSession.Poll(w, true); err != nil {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-wake:
		case <-cutoff:
			srv.log.Info("fakegmail: IDLE cut off", "account", sess.acct.email, "after", srv.opts.IdleTimeout)
			_ = sess.conn.Bye(idleByeText)
			// imapserver's read of DONE now fails and closes stop.
			<-stop
			return nil
		}
	}
}

// The commands below change mailboxes; other sessions of the account that
// are in IDLE are woken to send the resulting updates.

// Append gives the mail its Gmail ids, as Deliver does.
func (sess *session) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	defer sess.srv.wake(sess.acct)
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	sess.srv.storeMu.Lock()
	defer sess.srv.storeMu.Unlock()
	data, err := sess.UserSession.Append(mailbox, bytes.NewReader(raw), options)
	if err == nil {
		sess.srv.file(sess.acct, mailbox, data.UID, sess.srv.newIDs(sess.acct, raw, 0))
	}
	return data, err
}

func (sess *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	defer sess.srv.wake(sess.acct)
	return sess.UserSession.Store(w, numSet, flags, options)
}

func (sess *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	defer sess.srv.wake(sess.acct)
	return sess.UserSession.Expunge(w, uids)
}

// Fetch lets tests make FETCH fail (SetFetchError).
func (sess *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	sess.srv.mu.Lock()
	err := sess.acct.fetchErr
	sess.srv.mu.Unlock()
	if err != nil {
		return asIMAPError(err)
	}
	// FETCH BODY[] (not BODY.PEEK[]) sets \Seen, which others must hear of.
	defer sess.srv.wake(sess.acct)
	return sess.UserSession.Fetch(w, numSet, options)
}

// asIMAPError turns an injected failure into the status response imapserver
// sends: an *imap.Error as is, anything else as a tagged NO.
func asIMAPError(err error) error {
	var imapErr *imap.Error
	if errors.As(err, &imapErr) {
		return imapErr
	}
	return &imap.Error{Type: imap.StatusResponseTypeNo, Text: err.Error()}
}
