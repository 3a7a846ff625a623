// This file is the INBOX as a test sees it from outside IMAP: delivering
// mail, reading flags and counts, and a UIDVALIDITY reset.

package fakegmail

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// Deliver appends raw to the account's INBOX, as if it had just arrived, and
// returns its UID. Sessions with the INBOX selected are told about it (an
// EXISTS response, at once if they are in IDLE). The mail gets a new
// X-GM-MSGID and joins the conversation of a mail it references.
func (s *Server) Deliver(email string, raw []byte, seen bool) (imap.UID, error) {
	return s.deliver(email, raw, seen, 0)
}

func (s *Server) deliver(email string, raw []byte, seen bool, thrID uint64) (imap.UID, error) {
	a, err := s.account(email)
	if err != nil {
		return 0, err
	}
	opts := &imap.AppendOptions{Time: time.Now()}
	if seen {
		opts.Flags = []imap.Flag{imap.FlagSeen}
	}
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	// bytes.Reader has the Size method imap.LiteralReader wants.
	data, err := a.user.Append(Inbox, bytes.NewReader(raw), opts)
	if err != nil {
		return 0, fmt.Errorf("fakegmail: deliver to %s: %w", email, err)
	}
	s.file(a, Inbox, data.UID, s.newIDs(a, raw, thrID))
	s.wake(a)
	s.log.Debug("fakegmail: delivered", "account", email, "uid", uint32(data.UID))
	return data.UID, nil
}

// inbox runs f with a private view of the account's INBOX, through the same
// code paths an IMAP session uses.
func (s *Server) inbox(email string, f func(sess *imapmemserver.UserSession, sel *imap.SelectData) error) error {
	a, err := s.account(email)
	if err != nil {
		return err
	}
	sess := imapmemserver.NewUserSession(a.user)
	defer sess.Close()
	sel, err := sess.Select(Inbox, nil)
	if err != nil {
		return fmt.Errorf("fakegmail: select %s INBOX: %w", email, err)
	}
	return f(sess, sel)
}

// Flags returns the flags of the INBOX message with the given UID, or nil if
// there is no such message (or account).
func (s *Server) Flags(email string, uid imap.UID) []imap.Flag {
	var flags []imap.Flag
	_ = s.inbox(email, func(sess *imapmemserver.UserSession, sel *imap.SelectData) error {
		has := func(flag imap.Flag) bool {
			c := &imap.SearchCriteria{UID: []imap.UIDSet{imap.UIDSetNum(uid)}}
			if flag != "" {
				c.Flag = []imap.Flag{flag}
			}
			data, err := sess.Search(imapserver.NumKindUID, c, &imap.SearchOptions{})
			return err == nil && data.Count > 0
		}
		if !has("") {
			return nil
		}
		// The memory backend only exposes flags through SEARCH; the
		// mailbox's FLAGS list says which ones are worth asking about.
		flags = []imap.Flag{}
		for _, f := range sel.Flags {
			if has(f) {
				// The backend stores flags lower-cased; Gmail reports
				// system flags as \Seen etc.
				for _, sf := range systemFlags {
					if strings.EqualFold(string(f), string(sf)) {
						f = sf
					}
				}
				flags = append(flags, f)
			}
		}
		return nil
	})
	return flags
}

// IsSeen reports whether the INBOX message with the given UID has \Seen.
func (s *Server) IsSeen(email string, uid imap.UID) bool {
	for _, f := range s.Flags(email, uid) {
		if strings.EqualFold(string(f), string(imap.FlagSeen)) {
			return true
		}
	}
	return false
}

// Count returns the number of messages in the account's INBOX.
func (s *Server) Count(email string) int {
	n := 0
	_ = s.inbox(email, func(_ *imapmemserver.UserSession, sel *imap.SelectData) error {
		n = int(sel.NumMessages)
		return nil
	})
	return n
}

// UIDValidity returns the account's current INBOX UIDVALIDITY, or 0 for an
// unknown account. It stays the same until ResetUIDValidity.
func (s *Server) UIDValidity(email string) uint32 {
	var v uint32
	_ = s.inbox(email, func(_ *imapmemserver.UserSession, sel *imap.SelectData) error {
		a, _ := s.account(email)
		v = s.shownUIDValidity(a, Inbox, sel.UIDValidity)
		return nil
	})
	return v
}

// ResetUIDValidity gives the account's INBOX a new UIDVALIDITY, keeping its
// messages and flags but renumbering their UIDs from 1, which is what a
// client sees when Gmail rebuilds a mailbox (RFC 3501 section 2.3.1.1). The
// account's connections are dropped first, so clients must reconnect and
// re-select to notice. It returns the new UIDVALIDITY.
func (s *Server) ResetUIDValidity(email string) (uint32, error) {
	a, err := s.account(email)
	if err != nil {
		return 0, err
	}
	s.Disconnect(email)

	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	// The memory backend bumps UIDVALIDITY for every mailbox created, so
	// recreate INBOX and copy the messages over from the old one.
	const old = "fakegmail-old-inbox"
	if err := a.user.Rename(Inbox, old, nil); err != nil {
		return 0, fmt.Errorf("fakegmail: reset uidvalidity for %s: %w", email, err)
	}
	if err := a.user.Create(Inbox, nil); err != nil {
		return 0, fmt.Errorf("fakegmail: reset uidvalidity for %s: %w", email, err)
	}
	sess := imapmemserver.NewUserSession(a.user)
	if _, err := sess.Select(old, nil); err != nil {
		return 0, fmt.Errorf("fakegmail: reset uidvalidity for %s: %w", email, err)
	}
	var all imap.SeqSet
	all.AddRange(1, 0) // 1:*
	copied, err := sess.Copy(all, Inbox)
	sess.Close()
	if err != nil {
		return 0, fmt.Errorf("fakegmail: reset uidvalidity for %s: %w", email, err)
	}
	if err := a.user.Delete(old); err != nil {
		return 0, fmt.Errorf("fakegmail: reset uidvalidity for %s: %w", email, err)
	}
	s.renumbered(a, Inbox, copied.SourceUIDs, copied.DestUIDs)
	s.mu.Lock()
	delete(a.uidValidity, Inbox)
	s.mu.Unlock()
	s.log.Info("fakegmail: uidvalidity reset", "account", email, "uidvalidity", copied.UIDValidity)
	return copied.UIDValidity, nil
}
