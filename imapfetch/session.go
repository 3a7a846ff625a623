// This file is one IMAP connection: dial, log in, select INBOX, and wait
// for new mail (IDLE or a timer); poll.go searches and fetches, ingest.go
// hands each mail to the ticket store.

package imapfetch

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
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tlsmode"
)

// errServerClosed: the server ended the connection (BYE, IDLE cut-off,
// network drop). The worker reconnects.
var errServerClosed = errors.New("imapfetch: connection closed by the server")

// session is one IMAP connection of a worker.
type session struct {
	w       *worker
	started func() // the session has polled once: another may start
	o       *Options
	log     *slog.Logger
	c       *imapclient.Client
	conn    *heardConn  // under c (and its TLS), for guard
	caps    imap.CapSet // after login
	gmWire  bool        // c talks through a gmConn (gmext.go)
	// silent is set when guard dropped the connection.
	silent atomic.Bool
	once   bool

	// newMail receives a value when the server announces EXISTS.
	newMail chan struct{}

	// cur and marks are the selected folder's: INBOX, or Sent while
	// sent is true (sent.go).
	cur   accounts.Cursor
	marks *uidMarks
	sent  bool
	// sentBox is the Sent folder's name, once looked up (sentLooked).
	sentBox    string
	sentLooked bool

	rep Report

	reported   Report // rep at the last OnPoll call
	pollFailed bool   // a search for new mail failed, and OnPoll was told

	progress    func(done, total int)
	done, total int
}

// session runs one connection: log in, select INBOX, run the initial
// import if due, then fetch new mail; with once it logs out after the first
// fetch, otherwise it waits (IDLE or PollInterval) and fetches again until
// ctx ends or something fails. The worker's polled flag tells whether it got
// as far as one complete fetch.
func (w *worker) session(ctx context.Context, once bool, progress func(done, total int)) (Report, error) {
	w.polled = false
	w.inbox.complete, w.sent.complete = false, false
	// Logging in and the first poll take several Redis round trips and a
	// token refresh; limiting how many sessions do that at once keeps a
	// crowd of them (start, or every connection cut together) from
	// queueing on Redis until they time out, and makes them wait instead.
	if !w.f.starting.acquire(ctx) {
		return Report{}, context.Cause(ctx)
	}
	started := sync.OnceFunc(w.f.starting.release)
	defer started()
	a, err := w.f.acc.Get(ctx, w.email)
	if err != nil {
		if errors.Is(err, accounts.ErrNotFound) {
			return Report{}, fmt.Errorf("%w: %w", errStopped, err)
		}
		return Report{}, storeErr(err)
	}
	if a.State != accounts.StateConnected {
		return Report{}, fmt.Errorf("%w: state %s", errStopped, a.State)
	}
	if err := w.stillThrottled(a); err != nil {
		return Report{}, err
	}
	s := &session{
		started:  started,
		w:        w,
		o:        &w.f.opts,
		log:      w.log,
		once:     once,
		newMail:  make(chan struct{}, 1),
		progress: progress,
	}
	start := time.Now()
	if err := s.dial(); err != nil {
		err = fmt.Errorf("connect to %s: %w", s.o.IMAPAddr, s.whySilent(err))
		s.reportEnd(ctx, time.Since(start), err)
		return s.rep, err
	}
	defer s.close()
	err = s.whySilent(s.run(ctx, a))
	if err != nil && ctx.Err() == nil && s.closed() && !errors.Is(err, errServerClosed) && !errors.Is(err, errSilent) && !oauth.NeedsReconnect(err) {
		err = fmt.Errorf("%w: %w", errServerClosed, err)
	}
	err = w.noteThrottle(ctx, err)
	s.reportEnd(ctx, time.Since(start), err)
	return s.rep, err
}

// reportPoll hands Options.OnPoll what the session did since the last call.
func (s *session) reportPoll(ctx context.Context, took time.Duration, err error) {
	if s.o.OnPoll == nil {
		return
	}
	if ctx.Err() != nil {
		// Cut short by shutdown or a lost lease: the mail handled counts,
		// but neither the time nor the error says anything of the account.
		took, err = 0, nil
	}
	d := s.rep.sub(s.reported)
	if took == 0 && err == nil && d == (Report{}) {
		return
	}
	s.reported = s.rep
	s.o.OnPoll(s.w.email, d, took, err)
}

// reportEnd reports the end of a session to OnPoll. One that fails before
// its first poll (connect, login, initial import) is a failed poll; one
// that polled ends routinely (Gmail's IDLE cut-off), and the next session
// shows whether the account is still reachable.
func (s *session) reportEnd(ctx context.Context, took time.Duration, err error) {
	switch {
	case s.pollFailed:
		return // told with the poll
	case s.w.polled || err == nil:
		took, err = 0, nil
	}
	s.reportPoll(ctx, took, err)
}

func (s *session) run(ctx context.Context, a *accounts.Account) error {
	if err := s.login(ctx); err != nil {
		return err
	}
	if err := s.selectInbox(ctx); err != nil {
		return err
	}
	// recorded is what the account's Imported counter already holds of
	// this session's work; the initial import is counted with the first
	// poll.
	recorded := s.rep.Created + s.rep.Comments
	if !a.ImportDone {
		if err := s.initialImport(ctx, a); err != nil {
			return err
		}
	}
	for {
		start := time.Now()
		var err error
		if s.o.SentFolder {
			// Before INBOX: mail that reaches INBOX meanwhile, while it is
			// not selected, is found by the search that follows.
			err = s.pollSent(ctx)
		}
		if err == nil {
			err = s.pollNew(ctx)
		}
		s.reportPoll(ctx, time.Since(start), err)
		if err != nil {
			s.pollFailed = true
			return err
		}
		s.w.polled = true
		s.w.inbox.complete, s.w.sent.complete = true, true
		s.w.clearThrottle(ctx, a)
		s.started()
		done := s.rep.Created + s.rep.Comments
		s.recordPoll(ctx, done-recorded)
		recorded = done
		if s.once {
			return nil
		}
		if err := s.wait(ctx); err != nil {
			return err
		}
	}
}

// dial connects as Options.TLSMode says. The TCP connection is made here,
// not by imapclient, so that guard can hear it.
func (s *session) dial() error {
	opts := &imapclient.Options{
		TLSConfig: s.o.TLSConfig,
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(data *imapclient.UnilateralDataMailbox) {
				// EXISTS: a message arrived (RFC 3501 section 7.3.1).
				if data.NumMessages != nil {
					select {
					case s.newMail <- struct{}{}:
					default:
					}
				}
			},
		},
	}
	host, _, err := net.SplitHostPort(s.o.IMAPAddr)
	if err != nil {
		return err
	}
	switch s.o.TLSMode {
	case tlsmode.Implicit, tlsmode.StartTLS:
		cfg := &tls.Config{}
		if s.o.TLSConfig != nil {
			cfg = s.o.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		if cfg.NextProtos == nil && s.o.TLSMode == tlsmode.Implicit {
			cfg.NextProtos = []string{"imap"} // as imapclient.DialTLS does
		}
		opts.TLSConfig = cfg
	case tlsmode.Plain:
		if !tlsmode.IsLoopback(s.o.IMAPAddr) {
			return fmt.Errorf("refusing plaintext IMAP to %s: only loopback addresses may skip TLS", s.o.IMAPAddr)
		}
	default:
		return fmt.Errorf("unknown TLS mode %q", s.o.TLSMode)
	}
	d := &net.Dialer{Timeout: min(30*time.Second, s.o.CommandTimeout)}
	raw, err := d.Dial("tcp", s.o.IMAPAddr)
	if err != nil {
		return err
	}
	s.conn = &heardConn{Conn: raw}
	// The TLS handshake, the greeting and STARTTLS are waits for the
	// server like any command.
	stop := s.guard()
	defer stop()
	switch s.o.TLSMode {
	case tlsmode.Implicit:
		tc := tls.Client(s.conn, opts.TLSConfig)
		if err := tc.Handshake(); err != nil {
			tc.Close()
			return err
		}
		s.c = imapclient.New(&gmConn{Conn: tc}, opts)
		s.gmWire = true
	case tlsmode.StartTLS:
		// imapclient starts TLS itself, over the raw connection: no room
		// for gmConn, so no Gmail ids (Gmail offers implicit TLS only).
		if s.c, err = imapclient.NewStartTLS(s.conn, opts); err != nil {
			return err
		}
	default:
		s.c = imapclient.New(&gmConn{Conn: s.conn}, opts)
		s.gmWire = true
	}
	if err := s.c.WaitGreeting(); err != nil {
		s.c.Close()
		return err
	}
	return nil
}

func (s *session) closed() bool {
	select {
	case <-s.c.Closed():
		return true
	default:
		return false
	}
}

// close logs out politely when the connection is still up.
func (s *session) close() {
	if !s.closed() {
		t := time.AfterFunc(5*time.Second, func() { s.c.Close() })
		_ = s.c.Logout().Wait()
		t.Stop()
	}
	s.c.Close()
}

// bounded runs a store write that must finish even when ctx was cancelled
// by shutdown (it records work already done), within CommandTimeout. A
// failure is logged, not returned: the write is bookkeeping.
func (s *session) bounded(ctx context.Context, f func(ctx context.Context) error, what string) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.o.CommandTimeout)
	defer cancel()
	if err := f(bctx); err != nil {
		s.log.Warn("imapfetch: "+what, "err", err)
	}
}

// login sends ID and authenticates with the OAuth mechanism the server
// offers. A token the server rejects (AUTHENTICATIONFAILED: expired early,
// revoked) is dropped and refreshed once; a refresh answered with
// invalid_grant comes back as oauth.ErrInvalidGrant, already recorded on
// the account by Options.Tokens.
func (s *session) login(ctx context.Context) error {
	stop := s.guard()
	caps := s.c.Caps()
	if caps.Has(imap.CapID) {
		// Google asks IMAP clients to identify themselves; a server that
		// refuses ID is still usable.
		if _, err := s.c.ID(s.o.ClientID).Wait(); err != nil {
			s.log.Debug("imapfetch: ID refused", "err", err)
		}
	}
	stop()
	var mechs []string
	for c := range caps {
		if m, ok := strings.CutPrefix(strings.ToUpper(string(c)), "AUTH="); ok {
			mechs = append(mechs, m)
		}
	}
	for try := 1; ; try++ {
		tok, err := s.o.Tokens.Token(ctx, s.w.email)
		if errors.Is(err, accounts.ErrDisconnected) || errors.Is(err, accounts.ErrNotFound) {
			return fmt.Errorf("%w: %w", errStopped, err)
		}
		if err != nil {
			return fmt.Errorf("access token for %s: %w", s.w.email, err)
		}
		sc := oauth.Mechanism(mechs, s.w.email, tok.AccessToken)
		stop := s.guard()
		err = oauth.Explain(sc, s.c.Authenticate(sc))
		if err == nil {
			// Servers may announce more after login (RFC 3501 section
			// 7.2.1); Caps asks again if the OK carried none.
			s.caps = s.c.Caps()
		}
		stop()
		if err == nil {
			return nil
		}
		// A rejected token shows as NO [AUTHENTICATIONFAILED] (Gmail), or
		// as the XOAUTH2 error challenge followed by anything at all: go-imap
		// answers the challenge with "=", which Dovecot calls BAD.
		var ierr *imap.Error
		var xerr *oauth.XOAUTH2Error
		if try == 1 && (errors.As(err, &ierr) && ierr.Code == imap.ResponseCodeAuthenticationFailed || errors.As(err, &xerr)) {
			s.log.Info("imapfetch: server rejected the access token; refreshing it", "err", err)
			s.o.Tokens.Invalidate(s.w.email, tok.AccessToken)
			continue
		}
		return fmt.Errorf("authenticate %s: %w", s.w.email, err)
	}
}

// mailbox is the name of the selected folder, which its UIDs belong to.
func (s *session) mailbox() string {
	if s.sent {
		return s.sentBox
	}
	return "INBOX"
}

// selectInbox selects INBOX and checks UIDVALIDITY against the cursor.
func (s *session) selectInbox(ctx context.Context) error {
	stop := s.guard()
	sel, err := s.c.Select("INBOX", nil).Wait()
	stop()
	if err != nil {
		return fmt.Errorf("select INBOX: %w", err)
	}
	cur, err := s.w.f.acc.Cursor(ctx, s.w.email)
	if err != nil {
		return storeErr(err)
	}
	if cur.UIDValidity != sel.UIDValidity {
		if cur.UIDValidity != 0 {
			// RFC 3501 section 2.3.1.1: the old UIDs mean nothing now.
			s.log.Warn("imapfetch: INBOX UIDVALIDITY changed; searching the whole mailbox again, Message-ID dedupe prevents duplicate tickets",
				"old_uidvalidity", cur.UIDValidity, "uidvalidity", sel.UIDValidity, "old_last_uid", cur.LastUID)
		}
		cur = accounts.Cursor{UIDValidity: sel.UIDValidity}
		if err := s.w.f.acc.SetCursor(ctx, s.w.email, cur); err != nil {
			return storeErr(err)
		}
	}
	s.cur, s.marks, s.sent = cur, &s.w.inbox, false
	s.marks.reset(sel.UIDValidity)
	return nil
}

// wait returns when it is time to poll again: PollInterval has passed, or
// (with IDLE) the server announced a new message. IDLE is re-issued every
// IdleRestart, before the server's own cut-off (RFC 2177 section 3; Gmail
// ends IDLE after about 29 minutes).
func (s *session) wait(ctx context.Context) error {
	deadline := time.Now().Add(s.o.PollInterval)
	useIdle := s.o.IDLE && s.caps.Has(imap.CapIdle)
	for {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return nil
		}
		select {
		case <-s.newMail:
			return nil // announced during the last command
		default:
		}
		if !useIdle {
			t := time.NewTimer(remaining)
			select {
			case <-ctx.Done():
				t.Stop()
				return context.Cause(ctx)
			case <-s.c.Closed():
				t.Stop()
				return errServerClosed
			case <-t.C:
				return nil
			}
		}

		stop := s.guard()
		idle, err := s.c.Idle()
		stop()
		if err != nil {
			return fmt.Errorf("IDLE: %w", err)
		}
		t := time.NewTimer(min(remaining, s.o.IdleRestart))
		var mail, closed bool
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-s.newMail:
			mail = true
		case <-s.c.Closed():
			closed = true
		}
		t.Stop()
		if closed {
			_ = idle.Close()
			return errServerClosed
		}
		stop = s.guard()
		err = idle.Close()
		if err == nil {
			err = idle.Wait()
		}
		stop()
		if err != nil {
			return fmt.Errorf("IDLE: %w", err)
		}
		if err := context.Cause(ctx); err != nil {
			return err
		}
		if mail {
			s.log.Debug("imapfetch: IDLE reported new mail")
			return nil
		}
	}
}
