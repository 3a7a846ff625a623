package imapfetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tickets"
	"github.com/mailgate/mailgate/tlsmode"
)

// errServerClosed: the server ended the connection (BYE, IDLE cut-off,
// network drop). The worker reconnects.
var errServerClosed = errors.New("imapfetch: connection closed by the server")

// bodyPeek is BODY.PEEK[]: the whole message, without setting \Seen
// (RFC 3501 section 6.4.5), so that only a stored ticket marks it read.
var bodyPeek = &imap.FetchItemBodySection{Peek: true}

// session is one IMAP connection of a worker.
type session struct {
	w    *worker
	o    *Options
	log  *slog.Logger
	c    *imapclient.Client
	caps imap.CapSet // after login
	once bool

	// newMail receives a value when the server announces EXISTS.
	newMail chan struct{}

	cur accounts.Cursor
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
	a, err := w.f.acc.Get(ctx, w.email)
	if err != nil {
		if errors.Is(err, accounts.ErrNotFound) {
			return Report{}, fmt.Errorf("%w: %w", errStopped, err)
		}
		return Report{}, err
	}
	if a.State != accounts.StateConnected {
		return Report{}, fmt.Errorf("%w: state %s", errStopped, a.State)
	}
	src, err := w.source(ctx)
	if err != nil {
		return Report{}, err
	}
	s := &session{
		w:        w,
		o:        &w.f.opts,
		log:      w.log,
		once:     once,
		newMail:  make(chan struct{}, 1),
		progress: progress,
	}
	start := time.Now()
	if err := s.dial(); err != nil {
		err = fmt.Errorf("connect to %s: %w", s.o.IMAPAddr, err)
		s.reportEnd(ctx, time.Since(start), err)
		return s.rep, err
	}
	defer s.close()
	err = s.run(ctx, a, src)
	if err != nil && ctx.Err() == nil && s.closed() && !errors.Is(err, errServerClosed) && !errors.Is(err, oauth.ErrInvalidGrant) {
		err = fmt.Errorf("%w: %w", errServerClosed, err)
	}
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

func (s *session) run(ctx context.Context, a *accounts.Account, src *oauth.Source) error {
	if err := s.login(ctx, src); err != nil {
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
		err := s.pollNew(ctx)
		s.reportPoll(ctx, time.Since(start), err)
		if err != nil {
			s.pollFailed = true
			return err
		}
		s.w.polled = true
		done := s.rep.Created + s.rep.Comments
		s.bounded(ctx, func(ctx context.Context) error {
			return s.w.f.acc.RecordPoll(ctx, s.w.email, done-recorded)
		}, "record poll")
		recorded = done
		if s.once {
			return nil
		}
		if err := s.wait(ctx); err != nil {
			return err
		}
	}
}

// dial connects as Options.TLSMode says.
func (s *session) dial() error {
	opts := &imapclient.Options{
		TLSConfig: s.o.TLSConfig,
		Dialer:    &net.Dialer{Timeout: min(30*time.Second, s.o.CommandTimeout)},
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
	var err error
	switch s.o.TLSMode {
	case tlsmode.Implicit:
		s.c, err = imapclient.DialTLS(s.o.IMAPAddr, opts)
	case tlsmode.StartTLS:
		s.c, err = imapclient.DialStartTLS(s.o.IMAPAddr, opts)
	case tlsmode.Plain:
		if !tlsmode.IsLoopback(s.o.IMAPAddr) {
			return fmt.Errorf("refusing plaintext IMAP to %s: only loopback addresses may skip TLS", s.o.IMAPAddr)
		}
		s.c, err = imapclient.DialInsecure(s.o.IMAPAddr, opts)
	default:
		err = fmt.Errorf("unknown TLS mode %q", s.o.TLSMode)
	}
	if err != nil {
		return err
	}
	stop := s.guard()
	defer stop()
	return s.c.WaitGreeting()
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

// guard closes the connection if the command it surrounds runs longer than
// CommandTimeout: imapclient waits for a reply without a deadline, and a
// server that stops answering must not hang the account forever.
func (s *session) guard() (stop func()) {
	t := time.AfterFunc(s.o.CommandTimeout, func() {
		s.log.Warn("imapfetch: IMAP command timed out; dropping the connection", "timeout", s.o.CommandTimeout)
		s.c.Close()
	})
	return func() { t.Stop() }
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
// invalid_grant comes back as oauth.ErrInvalidGrant.
func (s *session) login(ctx context.Context, src *oauth.Source) error {
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
		tok, err := src.Token(ctx)
		s.w.noteToken(ctx, tok, err)
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
			src.Invalidate()
			continue
		}
		return fmt.Errorf("authenticate %s: %w", s.w.email, err)
	}
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
		return err
	}
	if cur.UIDValidity != sel.UIDValidity {
		if cur.UIDValidity != 0 {
			// RFC 3501 section 2.3.1.1: the old UIDs mean nothing now.
			s.log.Warn("imapfetch: INBOX UIDVALIDITY changed; searching the whole mailbox again, Message-ID dedupe prevents duplicate tickets",
				"old_uidvalidity", cur.UIDValidity, "uidvalidity", sel.UIDValidity, "old_last_uid", cur.LastUID)
		}
		cur = accounts.Cursor{UIDValidity: sel.UIDValidity}
		if err := s.w.f.acc.SetCursor(ctx, s.w.email, cur); err != nil {
			return err
		}
	}
	s.cur = cur
	if s.w.uidValidity != sel.UIDValidity {
		s.w.uidValidity = sel.UIDValidity
		clear(s.w.quarantined)
		clear(s.w.failed)
	}
	return nil
}

// initialImport runs the choice made at connect (G4). The mails that
// arrived before the account was connected (INTERNALDATE before
// ConnectedAt) are "existing mail": with n > 0 the n most recent of them,
// read or unread, become tickets with triggers suppressed (G5); with n = 0
// none does. The cursor then starts after them, so mail that arrived after
// the connect (even before this first session) is new mail (G17).
func (s *session) initialImport(ctx context.Context, a *accounts.Account) error {
	stop := s.guard()
	data, err := s.c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	stop()
	if err != nil {
		return fmt.Errorf("initial import: UID SEARCH ALL: %w", err)
	}
	all := data.AllUIDs()
	slices.Sort(all)
	nOld, err := s.arrivedBefore(all, a.ConnectedAt)
	if err != nil {
		return fmt.Errorf("initial import: %w", err)
	}
	old := all[:nOld]
	var boundary uint32
	if len(old) > 0 {
		boundary = uint32(old[len(old)-1])
	}
	if n := a.ImportRecent; n > 0 && len(old) > 0 {
		pick := old[max(0, len(old)-n):]
		s.log.Info("imapfetch: initial import", "mails", len(pick), "existing", len(old))
		s.total += len(pick)
		done, err := s.fetchAndIngest(ctx, pick, true, 0)
		if err != nil {
			return fmt.Errorf("initial import: %w", err)
		}
		if left := len(pick) - len(done); left > 0 {
			// Retried by the next session, which runs the import again;
			// what was ingested is a duplicate then.
			return fmt.Errorf("initial import: %d of %d mails failed and will be retried", left, len(pick))
		}
	}
	if boundary > s.cur.LastUID {
		s.cur.LastUID = boundary
	}
	if err := s.w.f.acc.SetCursor(ctx, s.w.email, s.cur); err != nil {
		return err
	}
	if err := s.w.f.acc.MarkImportDone(ctx, s.w.email); err != nil {
		return err
	}
	s.log.Info("imapfetch: initial import done", "imported", s.rep.InitialImport, "existing", len(old),
		"arrived_since_connect", len(all)-len(old), "last_uid", s.cur.LastUID)
	return nil
}

// dateChunk is how many INTERNALDATEs arrivedBefore asks for at once.
const dateChunk = 200

// arrivedBefore returns how many of uids (ascending) arrived before
// cutoff, by INTERNALDATE. UIDs grow with arrival (RFC 3501 section
// 2.3.1.1), so it looks from the newest backwards and usually stops within
// the first chunk. INTERNALDATE has whole seconds, so a mail from the
// second of the cutoff counts as arrived after it; a zero cutoff means all
// arrived before.
func (s *session) arrivedBefore(uids []imap.UID, cutoff time.Time) (int, error) {
	if cutoff.IsZero() {
		return len(uids), nil
	}
	cutoff = cutoff.Truncate(time.Second)
	for end := len(uids); end > 0; {
		start := max(0, end-dateChunk)
		stop := s.guard()
		msgs, err := s.c.Fetch(imap.UIDSetNum(uids[start:end]...), &imap.FetchOptions{UID: true, InternalDate: true}).Collect()
		stop()
		if err != nil {
			return 0, fmt.Errorf("UID FETCH INTERNALDATE: %w", err)
		}
		dates := make(map[imap.UID]time.Time, len(msgs))
		for _, m := range msgs {
			dates[m.UID] = m.InternalDate
		}
		for i := end - 1; i >= start; i-- {
			if d, ok := dates[uids[i]]; ok && d.Before(cutoff) {
				return i + 1, nil
			}
		}
		end = start
	}
	return 0, nil
}

// pollNew fetches the unread mail above the cursor (G1–G3).
func (s *session) pollNew(ctx context.Context) error {
	// An EXISTS from now on asks for another poll.
	select {
	case <-s.newMail:
	default:
	}
	var rng imap.UIDSet
	rng.AddRange(imap.UID(s.cur.LastUID+1), 0) // LastUID+1:*
	// Two searches: every UID in range (its maximum is where the cursor
	// may go once the unread ones are done; read mail is done by
	// definition, G3), then the unread ones. In this order a mail
	// arriving in between is in the second answer, never skipped.
	//
	// With ESEARCH (RFC 4731) both answers are tagged, so they can share
	// one round trip. Without it, untagged "* SEARCH" replies cannot be
	// told apart, and a server that runs pipelined commands concurrently
	// (Dovecot does) answers them in any order: wait for each in turn.
	esearch := s.caps.Has(imap.CapESearch)
	var allOpts, unseenOpts *imap.SearchOptions
	if esearch {
		allOpts = &imap.SearchOptions{ReturnMax: true}
		unseenOpts = &imap.SearchOptions{ReturnAll: true}
	}
	stop := s.guard()
	allCmd := s.c.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{rng}}, allOpts)
	var allData *imap.SearchData
	var allErr error
	if !esearch {
		allData, allErr = allCmd.Wait()
	}
	unseenCmd := s.c.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{rng}, NotFlag: []imap.Flag{imap.FlagSeen}}, unseenOpts)
	if esearch {
		allData, allErr = allCmd.Wait()
	}
	data, err := unseenCmd.Wait()
	stop()
	if err == nil {
		err = allErr
	}
	if err != nil {
		return fmt.Errorf("UID SEARCH UNSEEN: %w", err)
	}
	var ceiling uint32
	if esearch {
		ceiling = allData.Max
	} else if all := allData.AllUIDs(); len(all) > 0 {
		ceiling = uint32(slices.Max(all))
	}
	var uids []imap.UID
	for _, u := range data.AllUIDs() {
		// "n:*" includes the highest UID even when it is below n
		// (RFC 3501 section 6.4.8), so filter.
		if uint32(u) > s.cur.LastUID {
			uids = append(uids, u)
		}
	}
	slices.Sort(uids)
	if len(uids) == 0 {
		s.advance(ctx, nil, nil, ceiling)
		return nil
	}
	s.total += len(uids)
	before := s.rep
	_, err = s.fetchAndIngest(ctx, uids, false, ceiling)
	s.log.Info("imapfetch: fetched new mail", "found", len(uids),
		"created", s.rep.Created-before.Created, "comments", s.rep.Comments-before.Comments,
		"duplicates", s.rep.Duplicates-before.Duplicates, "suppressed", s.rep.Suppressed-before.Suppressed,
		"quarantined", s.rep.Quarantined-before.Quarantined, "errors", s.rep.Errors-before.Errors,
		"last_uid", s.cur.LastUID)
	return err
}

// fetchAndIngest fetches uids (ascending) in batches of BatchSize and
// ingests each. For new mail it then marks the ingested ones \Seen and
// moves the cursor; the initial import leaves flags and cursor alone. It
// returns the UIDs that are done: ingested, quarantined or gone.
//
// Shutdown (ctx cancelled) is noticed between mails: the mail being
// ingested, and the \Seen of those ingested, are finished first.
func (s *session) fetchAndIngest(ctx context.Context, uids []imap.UID, imported bool, ceiling uint32) (map[imap.UID]bool, error) {
	done := make(map[imap.UID]bool, len(uids))
	for start := 0; start < len(uids); start += s.o.BatchSize {
		if err := context.Cause(ctx); err != nil {
			return done, err
		}
		batch := uids[start:min(start+s.o.BatchSize, len(uids))]
		stop := s.guard()
		msgs, err := s.c.Fetch(imap.UIDSetNum(batch...), &imap.FetchOptions{
			UID:          true,
			InternalDate: true,
			BodySection:  []*imap.FetchItemBodySection{bodyPeek},
		}).Collect()
		stop()
		if err != nil {
			return done, fmt.Errorf("UID FETCH: %w", err)
		}
		byUID := make(map[imap.UID]*imapclient.FetchMessageBuffer, len(msgs))
		for _, m := range msgs {
			byUID[m.UID] = m
		}

		var seen []imap.UID
		var abort error
		for _, uid := range batch {
			if err := context.Cause(ctx); err != nil {
				abort = err
				break
			}
			m := byUID[uid]
			if m == nil {
				done[uid] = true // expunged since the search
				continue
			}
			s.rep.Fetched++
			if imported {
				s.rep.InitialImport++
			}
			out, err := s.ingest(ctx, uint32(uid), m.FindBodySection(bodyPeek), m.InternalDate, imported)
			if err != nil {
				abort = err
				break
			}
			switch {
			case out == ingested && !imported:
				seen = append(seen, uid)
			case out == ingested, out == quarantined:
				done[uid] = true
			}
			s.done++
			if s.progress != nil {
				s.progress(s.done, s.total)
			}
		}
		if len(seen) > 0 {
			// Only now, with the tickets stored, do the mails become read.
			stop := s.guard()
			err := s.c.Store(imap.UIDSetNum(seen...), &imap.StoreFlags{
				Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen},
			}, nil).Close()
			stop()
			if err != nil {
				// Unseen still: the next poll ingests them again, as
				// duplicates, and retries the flag.
				return done, fmt.Errorf("UID STORE +FLAGS.SILENT (\\Seen): %w", err)
			}
			for _, u := range seen {
				done[u] = true
			}
		}
		if !imported {
			s.advance(ctx, uids, done, ceiling)
		}
		if abort != nil {
			return done, abort
		}
	}
	return done, nil
}

// advance moves the cursor over the leading UIDs that are done, so that a
// failed mail keeps it just below itself and is searched for again. When
// all of uids are done it moves on to ceiling, the highest UID the search
// saw: everything between is read mail, which is not ours to fetch.
func (s *session) advance(ctx context.Context, uids []imap.UID, done map[imap.UID]bool, ceiling uint32) {
	next := s.cur.LastUID
	all := true
	for _, u := range uids {
		if !done[u] {
			all = false
			break
		}
		next = max(next, uint32(u))
	}
	if all {
		next = max(next, ceiling)
	}
	if next <= s.cur.LastUID {
		return
	}
	s.cur.LastUID = next
	s.bounded(ctx, func(ctx context.Context) error {
		return s.w.f.acc.SetCursor(ctx, s.w.email, s.cur)
	}, "save cursor")
}

type outcome int

const (
	failed      outcome = iota // will be retried
	ingested                   // Ingest returned nil
	quarantined                // set aside, done
)

// ingest hands one mail to the ticket store with a context that outlives
// shutdown, so a ticket is never left half-written by a SIGTERM. It
// returns an error only when the session must stop (the store looks
// unreachable); a mail that fails on its own is counted, and quarantined at
// MaxAttempts.
func (s *session) ingest(ctx context.Context, uid uint32, raw []byte, received time.Time, imported bool) (outcome, error) {
	w := s.w
	if w.quarantined[uid] {
		return quarantined, nil
	}
	log := s.log.With("uid", uid)
	src := tickets.Source{
		SupportAddress: w.email,
		Origin:         "imap:" + w.email,
		ReceivedAt:     received,
	}
	if imported {
		src.SuppressTriggers = true
		src.Tags = []string{"imported"}
	}
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.o.CommandTimeout)
	defer cancel()

	var res tickets.Result
	var err error
	if raw == nil {
		err = errors.New("server returned no message body")
	} else {
		res, err = safeIngest(ictx, w.f.st, raw, src, log)
	}
	if err == nil {
		switch {
		case res.Duplicate:
			s.rep.Duplicates++
		case res.Suppressed != "":
			s.rep.Suppressed++
			if s.o.OnSuppressed != nil {
				s.o.OnSuppressed(w.email, res.Suppressed)
			}
		case res.Created:
			s.rep.Created++
		default:
			s.rep.Comments++
		}
		log.Debug("imapfetch: ingested", "ticket", res.Ticket, "created", res.Created,
			"duplicate", res.Duplicate, "suppressed", res.Suppressed, "threaded_by", res.ThreadedBy)
		if w.failed[uid] {
			delete(w.failed, uid)
			if err := w.f.acc.ClearAttempts(ictx, w.email, s.cur.UIDValidity, uid); err != nil {
				log.Warn("imapfetch: clear attempts", "err", err)
			}
		}
		return ingested, nil
	}
	if storeUnavailable(err) {
		return failed, fmt.Errorf("ingest uid %d: %w", uid, err)
	}

	n, aerr := w.f.acc.Attempt(ictx, w.email, s.cur.UIDValidity, uid)
	if aerr != nil {
		return failed, fmt.Errorf("count attempt of uid %d (ingest failed: %v): %w", uid, err, aerr)
	}
	w.failed[uid] = true
	if n < s.o.MaxAttempts {
		s.rep.Errors++
		log.Warn("imapfetch: ingest failed; will retry", "attempt", n, "max_attempts", s.o.MaxAttempts, "err", err)
		return failed, nil
	}
	reason := fmt.Sprintf("ingest failed %d times: %v", n, err)
	if qerr := w.f.st.Quarantine(ictx, raw, w.email, uid, reason); qerr != nil {
		return failed, fmt.Errorf("quarantine uid %d: %w", uid, qerr)
	}
	w.quarantined[uid] = true
	s.rep.Quarantined++
	if err := w.f.acc.AddQuarantined(ictx, w.email); err != nil {
		log.Warn("imapfetch: count quarantined mail", "err", err)
	}
	log.Error("imapfetch: mail quarantined; left unread in the mailbox", "attempts", n, "err", err)
	return quarantined, nil
}

// safeIngest calls Ingest and turns a panic (a parser bug on a strange
// mail) into an error, so one mail cannot take the daemon down.
func safeIngest(ctx context.Context, st TicketStore, raw []byte, src tickets.Source, log *slog.Logger) (res tickets.Result, err error) {
	defer func() {
		if v := recover(); v != nil {
			log.Error("imapfetch: panic in ingest", "panic", v, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic in ingest: %v", v)
		}
	}()
	return st.Ingest(ctx, raw, src)
}

// storeUnavailable reports errors that say nothing about the mail: the
// store could not be reached or did not answer in time. They end the
// session (retried with backoff) instead of counting against the mail.
func storeUnavailable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET)
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
