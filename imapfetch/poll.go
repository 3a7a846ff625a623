// This file finds and fetches mail in an open session: the initial import,
// the search for new mail, the batched FETCH, and the cursor that records
// how far the account was read.

package imapfetch

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailgate/mailgate/accounts"
)

// bodyPeek is BODY.PEEK[]: the whole message, without setting \Seen
// (RFC 3501 section 6.4.5), so that only a stored ticket marks it read.
var bodyPeek = &imap.FetchItemBodySection{Peek: true}

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
		if err := s.markSeen(seen); err != nil {
			return done, err
		}
		for _, u := range seen {
			done[u] = true
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
