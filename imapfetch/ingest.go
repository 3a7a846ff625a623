// This file hands one fetched mail to the ticket store, marks stored mail
// \Seen, and counts failures until a mail that keeps failing is
// quarantined.

package imapfetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/tickets"
)

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
		return failed, storeErr(fmt.Errorf("ingest uid %d: %w", uid, err))
	}

	n, aerr := w.f.acc.Attempt(ictx, w.email, s.cur.UIDValidity, uid)
	if aerr != nil {
		return failed, storeErr(fmt.Errorf("count attempt of uid %d (ingest failed: %v): %w", uid, err, aerr))
	}
	w.failed[uid] = true
	if n < s.o.MaxAttempts {
		s.rep.Errors++
		log.Warn("imapfetch: ingest failed; will retry", "attempt", n, "max_attempts", s.o.MaxAttempts, "err", err)
		return failed, nil
	}
	reason := fmt.Sprintf("ingest failed %d times: %v", n, err)
	if qerr := w.f.st.Quarantine(ictx, raw, w.email, uid, reason); qerr != nil {
		return failed, storeErr(fmt.Errorf("quarantine uid %d: %w", uid, qerr))
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

// markSeen sets \Seen on mails whose tickets are stored: only now do they
// become read in Gmail. On failure they stay unseen, so the next poll
// ingests them again, as duplicates, and retries the flag.
func (s *session) markSeen(uids []imap.UID) error {
	if len(uids) == 0 {
		return nil
	}
	stop := s.guard()
	err := s.c.Store(imap.UIDSetNum(uids...), &imap.StoreFlags{
		Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen},
	}, nil).Close()
	stop()
	if err != nil {
		return fmt.Errorf("UID STORE +FLAGS.SILENT (\\Seen): %w", err)
	}
	return nil
}
