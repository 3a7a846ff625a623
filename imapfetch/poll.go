// This file finds and fetches mail in an open session: the initial import,
// the search for new mail, the batched FETCH, and the cursor that records
// how far the account was read.

package imapfetch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/tickets"
)

// initialImport runs the choice the admin made at connect (import the N
// most recent mails, or none). The mails that arrived before the account
// was connected (INTERNALDATE before ConnectedAt) are "existing mail": with
// n > 0 the n most recent of them, read or unread, become tickets with
// triggers suppressed (no auto-replies to old mail); with n = 0 none does.
// The cursor then starts after them, so mail that arrived after the
// connect (even before this first session) is new mail.
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
		if left := len(pick) - done; left > 0 {
			// Retried by the next session, which runs the import again;
			// what was ingested is a duplicate then.
			return fmt.Errorf("initial import: %d of %d mails failed and will be retried", left, len(pick))
		}
	}
	if boundary > s.cur.LastUID {
		s.cur.LastUID = boundary
	}
	if err := s.w.f.acc.SetCursor(ctx, s.w.email, s.cur); err != nil {
		return storeErr(err)
	}
	if err := s.w.f.acc.MarkImportDone(ctx, s.w.email); err != nil {
		return storeErr(err)
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

// pollNew fetches the unread mail above the cursor.
func (s *session) pollNew(ctx context.Context) error {
	// An EXISTS from now on asks for another poll.
	select {
	case <-s.newMail:
	default:
	}
	var rng imap.UIDSet
	rng.AddRange(imap.UID(s.cur.LastUID+1), 0) // LastUID+1:*
	// Two searches: every UID in range (its maximum is where the cursor
	// may go once the unread ones are done; mail someone already read in
	// Gmail is not ours to fetch), then the unread ones. In this order a mail
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

// fetchAndIngest fetches uids (ascending) in batches of at most
// BatchSize mails and maxBatchBytes, and ingests each batch with one store
// call. For new mail it then marks the stored ones \Seen and moves the
// cursor; the initial import leaves flags and cursor alone. It returns how
// many of uids are done: ingested, quarantined or gone.
//
// The batches overlap: the next batch is fetched and parsed while the
// current one is stored, and its \Seen is answered while the next one is
// stored; at most two batches of mail are held at once. \Seen is only sent
// once the store has answered for the batch, and the cursor only moves
// once the server has answered the \Seen.
//
// Shutdown (ctx cancelled) is noticed between batches: the batch being
// stored, and the \Seen of its stored mails, are finished first.
func (s *session) fetchAndIngest(ctx context.Context, uids []imap.UID, imported bool, ceiling uint32) (int, error) {
	done := make([]bool, len(uids))
	ndone := 0
	src := tickets.Source{SupportAddress: s.w.email, Origin: "imap:" + s.w.email}
	if s.sent {
		src.Agent, src.Origin = true, "imap-sent:"+s.w.email
	}
	if imported {
		src.SuppressTriggers = true
		src.Tags = []string{"imported"}
	}
	var next *pendingFetch
	var seen *pendingSeen // the \Seen of the batch stored before
	var seenAt []int      // its mails' indexes in uids
	lead := 0             // uids[:lead] are done
	// finish waits for the \Seen in flight and moves the cursor over what
	// is done; it is also the way out, so that nothing is left in flight.
	finish := func() error {
		err := s.finishSeen(seen)
		if err == nil {
			for _, i := range seenAt {
				done[i] = true
				ndone++
			}
		}
		seen, seenAt = nil, nil
		if !imported {
			// advance looks at the leading done UIDs; those before the
			// last of them were looked at by the previous call.
			for lead < len(done) && done[lead] {
				lead++
			}
			from := max(0, lead-1)
			s.advance(ctx, uids[from:], done[from:], ceiling)
		}
		return err
	}
	var rest *pendingPlan
	defer func() {
		if next != nil {
			next.wait() // the FETCH in flight: read to its end and dropped
		}
		if rest != nil {
			rest.wait()
		}
	}()
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	ends, rest, err := s.startPlan(uids)
	if err != nil {
		return 0, err
	}
	if len(uids) > 0 {
		next = s.startFetch(uids[:ends[0]])
	}
	for k, start := 0, 0; next != nil; k, start = k+1, ends[k] {
		b := next.wait()
		next = nil
		if b.err != nil {
			err := errors.Join(fmt.Errorf("UID FETCH: %w", b.err), finish())
			return ndone, err
		}
		if err := context.Cause(ctx); err != nil {
			err = errors.Join(err, finish())
			return ndone, err
		}
		if k+1 == len(ends) && rest != nil {
			more, err := rest.wait()
			rest = nil
			if err != nil {
				err = errors.Join(err, finish())
				return ndone, err
			}
			ends = append(ends, more...)
		}
		if k+1 < len(ends) {
			next = s.startFetch(uids[ends[k]:ends[k+1]])
		}
		out, abort := s.ingestBatch(ctx, b, src, imported)
		// The \Seen of the previous batch was answered while this one was
		// stored.
		if err := finish(); err != nil {
			err = errors.Join(err, abort)
			return ndone, err
		}
		// UIDs asked for but not returned were expunged since the search.
		batch := uids[start:ends[k]]
		j := 0
		var stored []imap.UID
		for k, u := range batch {
			i := start + k
			for j < len(b.mails) && b.mails[j].uid < u {
				j++ // an answer for a UID not in batch: the client drops those
			}
			if j == len(b.mails) || b.mails[j].uid != u {
				done[i] = true
				ndone++
				continue
			}
			switch o := out[j]; {
			case o == ingested && !imported && !s.sent:
				stored = append(stored, u)
				seenAt = append(seenAt, i)
			case o == ingested, o == quarantined:
				done[i] = true
				ndone++
			}
		}
		seen = s.startSeen(stored)
		if abort != nil {
			err := errors.Join(abort, finish())
			return ndone, err
		}
	}
	if err := finish(); err != nil {
		return ndone, err
	}
	return ndone, nil
}

// advance moves the cursor over the leading UIDs that are done, so that a
// failed mail keeps it just below itself and is searched for again. When
// all of uids are done it moves on to ceiling, the highest UID the search
// saw: everything between is read mail, which is not ours to fetch.
func (s *session) advance(ctx context.Context, uids []imap.UID, done []bool, ceiling uint32) {
	next := s.cur.LastUID
	all := true
	for i, u := range uids {
		if !done[i] {
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
		if s.sent {
			return s.w.f.acc.SetSentCursor(ctx, s.w.email, s.cur)
		}
		return s.w.f.acc.SetCursor(ctx, s.w.email, s.cur)
	}, "save cursor")
}
