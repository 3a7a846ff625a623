// This file hands a fetched batch of mail to the ticket store in one call,
// marks the stored mail \Seen, and counts failures until a mail that keeps
// failing is quarantined.

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

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/tickets"
)

type outcome int

const (
	failed      outcome = iota // will be retried
	ingested                   // stored (or a duplicate of a stored mail)
	quarantined                // set aside, done
)

// errNoBody is the failure of a mail the server sent without its body.
var errNoBody = errors.New("server returned no message body")

// ingestBatch hands the mails of b to the ticket store in one IngestBatch
// call, with a context that outlives shutdown so that a batch is never left
// half-written by a SIGTERM, and returns each mail's outcome (in b's
// order). It returns an error only when the session must stop (the store
// looks unreachable); a mail that fails on its own is counted, and
// quarantined at MaxAttempts. Mails stored before that error keep their
// outcome, so that they are still marked \Seen. Counts of failed tries are
// cleared in one call for the stored mails this worker saw fail, and in a
// session's first poll for every stored mail (see uidMarks.complete).
// src is the Source of every mail but its ReceivedAt.
func (s *session) ingestBatch(ctx context.Context, b *fetchedBatch, src tickets.Source, imported bool) ([]outcome, error) {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.o.CommandTimeout)
	defer cancel()

	out := make([]outcome, len(b.mails))
	errs := make([]error, len(b.mails))
	batch := make([]tickets.BatchMail, 0, len(b.mails))
	idx := make([]int, 0, len(b.mails)) // batch[j] is b.mails[idx[j]]
	for i := range b.mails {
		m := &b.mails[i]
		switch {
		case s.marks.quarantined[uint32(m.uid)]:
			out[i] = quarantined
		case m.raw == nil:
			errs[i] = errNoBody
		case m.parseErr != nil:
			errs[i] = m.parseErr
		default:
			src.ReceivedAt = m.received
			src.GmailMsgID, src.GmailThreadID = m.gmMsgID, m.gmThrID
			batch = append(batch, tickets.BatchMail{Raw: m.raw, Parsed: m.parsed, Source: src})
			idx = append(idx, i)
		}
	}
	if len(batch) > 0 {
		var forget []uint32 // stored mails that may have failed before
		for j, r := range s.storeBatch(ictx, batch) {
			i := idx[j]
			if r.Err != nil {
				errs[i] = r.Err
				continue
			}
			out[i] = ingested
			uid := uint32(b.mails[i].uid)
			s.stored(ictx, b.mails[i].uid, r.Result)
			if s.marks.failed[uid] || !s.marks.complete {
				delete(s.marks.failed, uid)
				forget = append(forget, uid)
			}
		}
		if err := s.w.f.acc.ClearAttempts(ictx, s.w.email, s.mailbox(), s.cur.UIDValidity, forget...); err != nil {
			s.log.Warn("imapfetch: clear attempts", "mailbox", s.mailbox(), "mails", len(forget), "err", err)
		}
	}

	var abort error
	for i := range b.mails {
		m := &b.mails[i]
		s.rep.Fetched++
		if imported {
			s.rep.InitialImport++
		}
		if err := errs[i]; err != nil && abort == nil {
			out[i], abort = s.failed(ictx, m, err)
		}
		s.done++
		if s.progress != nil {
			s.progress(s.done, s.total)
		}
	}
	return out, abort
}

// stored counts one stored mail.
func (s *session) stored(ctx context.Context, uid imap.UID, res tickets.Result) {
	switch {
	case res.Skipped != "":
		s.rep.Skipped++
	case res.Duplicate:
		s.rep.Duplicates++
	case res.Suppressed != "":
		s.rep.Suppressed++
		if s.o.OnSuppressed != nil {
			s.o.OnSuppressed(s.w.email, res.Suppressed)
		}
	case res.Created:
		s.rep.Created++
	default:
		s.rep.Comments++
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("imapfetch: ingested", "uid", uid, "ticket", res.Ticket, "created", res.Created,
			"duplicate", res.Duplicate, "suppressed", res.Suppressed, "threaded_by", res.ThreadedBy,
			"sent_folder", s.sent, "skipped", res.Skipped)
	}
}

// failed counts a failed ingest of m against it and quarantines it at
// MaxAttempts. An error that says nothing about the mail (the store is
// unreachable) is not counted: it ends the session instead.
func (s *session) failed(ctx context.Context, m *fetchedMail, err error) (outcome, error) {
	w, uid := s.w, uint32(m.uid)
	if storeUnavailable(err) {
		return failed, storeErr(fmt.Errorf("ingest uid %d: %w", uid, err))
	}
	n, aerr := w.f.acc.Attempt(ctx, w.email, s.mailbox(), s.cur.UIDValidity, uid)
	if aerr != nil {
		return failed, storeErr(fmt.Errorf("count attempt of uid %d (ingest failed: %v): %w", uid, err, aerr))
	}
	s.marks.failed[uid] = true
	if n < s.o.MaxAttempts {
		s.rep.Errors++
		s.log.Warn("imapfetch: ingest failed; will retry", "mailbox", s.mailbox(), "uid", uid, "attempt", n, "max_attempts", s.o.MaxAttempts, "err", err)
		return failed, nil
	}
	reason := fmt.Sprintf("ingest failed %d times: %v", n, err)
	if s.sent {
		reason = "in the Sent folder: " + reason
	}
	if qerr := w.f.st.Quarantine(ctx, m.raw, w.email, uid, reason); qerr != nil {
		return failed, storeErr(fmt.Errorf("quarantine uid %d: %w", uid, qerr))
	}
	s.marks.quarantined[uid] = true
	s.rep.Quarantined++
	if err := w.f.acc.AddQuarantined(ctx, w.email); err != nil {
		s.log.Warn("imapfetch: count quarantined mail", "uid", uid, "err", err)
	}
	s.log.Error("imapfetch: mail quarantined; left unread in the mailbox", "mailbox", s.mailbox(), "uid", uid, "attempts", n, "err", err)
	return quarantined, nil
}

// storeBatch calls IngestBatch and turns a panic into per-mail errors, so
// that one mail cannot take the daemon down. A batch that panics is tried
// again mail by mail, so that only the mail that panics fails; mails the
// batch stored before it panicked come back as duplicates then.
func (s *session) storeBatch(ctx context.Context, batch []tickets.BatchMail) []tickets.BatchResult {
	res, err := s.safeIngestBatch(ctx, batch)
	if err == nil {
		return res
	}
	res = make([]tickets.BatchResult, len(batch))
	if len(batch) == 1 {
		res[0].Err = err
		return res
	}
	for i := range batch {
		one, err := s.safeIngestBatch(ctx, batch[i:i+1])
		if err != nil {
			res[i].Err = err
			continue
		}
		res[i] = one[0]
	}
	return res
}

// safeIngestBatch is IngestBatch with a recovered panic as its error.
func (s *session) safeIngestBatch(ctx context.Context, batch []tickets.BatchMail) (res []tickets.BatchResult, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("imapfetch: panic in ingest", "mails", len(batch), "panic", v, "stack", string(debug.Stack()))
			res, err = nil, fmt.Errorf("panic in ingest: %v", v)
		}
	}()
	res = s.w.f.st.IngestBatch(ctx, batch)
	if len(res) != len(batch) {
		return nil, fmt.Errorf("ticket store answered %d results for %d mails", len(res), len(batch))
	}
	return res, nil
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

// pendingSeen is a UID STORE +FLAGS.SILENT (\Seen) in flight.
type pendingSeen struct {
	uids []imap.UID
	done chan error
}

// startSeen sets \Seen on mails whose tickets are stored: only now do they
// become read in Gmail. It sends the command and returns; finishSeen waits
// for the answer, so that the next batch is stored meanwhile. On failure
// they stay unseen, so the next poll ingests them again, as duplicates, and
// retries the flag.
func (s *session) startSeen(uids []imap.UID) *pendingSeen {
	if len(uids) == 0 {
		return nil
	}
	p := &pendingSeen{uids: uids, done: make(chan error, 1)}
	cmd := s.c.Store(imap.UIDSetNum(uids...), &imap.StoreFlags{
		Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen},
	}, nil)
	// Read the answer at once: a server that answers with FETCH FLAGS all
	// the same must not stall the client's reader behind it.
	go func() { p.done <- cmd.Close() }()
	return p
}

// finishSeen waits for the answer to p (nil: nothing was sent).
func (s *session) finishSeen(p *pendingSeen) error {
	if p == nil {
		return nil
	}
	stop := s.guard()
	err := <-p.done
	stop()
	if err != nil {
		return fmt.Errorf("UID STORE +FLAGS.SILENT (\\Seen): %w", err)
	}
	return nil
}
