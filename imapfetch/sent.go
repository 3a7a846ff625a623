// This file reads the account's Sent folder (Options.SentFolder): an
// answer an agent wrote in Gmail itself lands there, not in INBOX, and
// still belongs on its ticket. The folder is found by its \Sent attribute
// (RFC 6154), never by its name, which Gmail localises ("[Gmail]/Sent
// Mail", "[Gmail]/Gesendet"). Its mail goes through the same batches as
// INBOX's, as tickets.Source.Agent, above a cursor of its own.

package imapfetch

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/accounts"
)

// findSent returns the name of the mailbox with the \Sent attribute, or ""
// when there is none. Servers with SPECIAL-USE and LIST-EXTENDED are asked
// for the attributes (LIST "" "*" RETURN (SPECIAL-USE)); others, Gmail
// among them, send them in a plain LIST.
func (s *session) findSent() (string, error) {
	var opts *imap.ListOptions
	if s.caps.Has(imap.CapSpecialUse) && s.caps.Has(imap.CapListExtended) {
		opts = &imap.ListOptions{ReturnSpecialUse: true}
	}
	stop := s.guard()
	list, err := s.c.List("", "*", opts).Collect()
	stop()
	if err != nil {
		return "", fmt.Errorf("LIST: %w", err)
	}
	for _, l := range list {
		for _, a := range l.Attrs {
			if strings.EqualFold(string(a), string(imap.MailboxAttrSent)) {
				return l.Mailbox, nil
			}
		}
	}
	return "", nil
}

// pollSent reads the mail that arrived in the Sent folder since the last
// poll and ingests it as agents' mail, then selects INBOX again. The
// folder is opened with EXAMINE: nothing there is marked or changed. On
// the first poll with the option on (no Sent cursor yet) the cursor starts
// at the folder's UIDNEXT, so old sent mail is never read; a changed
// UIDVALIDITY restarts it at 0, as for INBOX, and dedupe keeps what was
// added before from being added twice.
func (s *session) pollSent(ctx context.Context) error {
	if !s.sentLooked {
		name, err := s.findSent()
		if err != nil {
			return err
		}
		s.sentBox, s.sentLooked = name, true
		if name == "" {
			s.log.Warn("imapfetch: fetch.sent_folder is on, but the account has no mailbox with the \\Sent attribute; its sent mail is not read")
		}
	}
	if s.sentBox == "" {
		return nil
	}
	stop := s.guard()
	sel, err := s.c.Select(s.sentBox, &imap.SelectOptions{ReadOnly: true}).Wait()
	stop()
	if err != nil {
		return fmt.Errorf("examine %s: %w", s.sentBox, err)
	}
	cur, err := s.w.f.acc.SentCursor(ctx, s.w.email)
	if err != nil {
		return storeErr(err)
	}
	if cur.UIDValidity != sel.UIDValidity {
		if cur.UIDValidity == 0 {
			last := uint32(sel.UIDNext)
			if last > 0 {
				last--
			} else if last, err = s.highestUID(); err != nil {
				return err
			}
			cur = accounts.Cursor{UIDValidity: sel.UIDValidity, LastUID: last}
			s.log.Info("imapfetch: reading the Sent folder from now on; earlier sent mail is left alone",
				"mailbox", s.sentBox, "last_uid", last)
		} else {
			s.log.Warn("imapfetch: Sent folder UIDVALIDITY changed; reading it all again, Message-ID dedupe prevents duplicate comments",
				"mailbox", s.sentBox, "old_uidvalidity", cur.UIDValidity, "uidvalidity", sel.UIDValidity)
			cur = accounts.Cursor{UIDValidity: sel.UIDValidity}
		}
		if err := s.w.f.acc.SetSentCursor(ctx, s.w.email, cur); err != nil {
			return storeErr(err)
		}
	}
	s.cur, s.marks, s.sent = cur, &s.w.sent, true
	s.marks.reset(sel.UIDValidity)

	var rng imap.UIDSet
	rng.AddRange(imap.UID(cur.LastUID+1), 0)
	stop = s.guard()
	data, err := s.c.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{rng}}, nil).Wait()
	stop()
	if err != nil {
		return fmt.Errorf("UID SEARCH in %s: %w", s.sentBox, err)
	}
	var uids []imap.UID
	for _, u := range data.AllUIDs() {
		if uint32(u) > cur.LastUID { // "n:*" includes the highest UID
			uids = append(uids, u)
		}
	}
	slices.Sort(uids)
	if len(uids) > 0 {
		s.total += len(uids)
		before := s.rep
		_, err = s.fetchAndIngest(ctx, uids, false, uint32(uids[len(uids)-1]))
		s.log.Info("imapfetch: read the Sent folder", "mailbox", s.sentBox, "found", len(uids),
			"agent_comments", s.rep.Comments-before.Comments, "skipped", s.rep.Skipped-before.Skipped,
			"duplicates", s.rep.Duplicates-before.Duplicates, "errors", s.rep.Errors-before.Errors,
			"last_uid", s.cur.LastUID)
		if err != nil {
			return err
		}
	}
	return s.selectInbox(ctx)
}

// highestUID is the highest UID in the selected mailbox, 0 when empty: for
// a server that sends no UIDNEXT.
func (s *session) highestUID() (uint32, error) {
	stop := s.guard()
	data, err := s.c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	stop()
	if err != nil {
		return 0, fmt.Errorf("UID SEARCH ALL: %w", err)
	}
	if all := data.AllUIDs(); len(all) > 0 {
		return uint32(slices.Max(all)), nil
	}
	return 0, nil
}
