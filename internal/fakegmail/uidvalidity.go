// This file lets tests choose a mailbox's UIDVALIDITY. The memory backend
// numbers mailboxes 1, 2, 3... as they are created, so two folders of one
// account never share one there; on a real server they may (RFC 3501
// section 2.3.1.1 asks UIDVALIDITY to be unique per mailbox name only), and
// a client must keep them apart by name.

package fakegmail

import (
	"fmt"

	"github.com/emersion/go-imap/v2"
)

// SetUIDValidity makes the account's mailbox report v as its UIDVALIDITY
// from now on, in SELECT, EXAMINE and STATUS; the mail and its UIDs stay as
// they are. v 0 goes back to the backend's own. ResetUIDValidity of INBOX
// drops INBOX's, and the choice stays with the name, not with a renamed
// mailbox.
func (s *Server) SetUIDValidity(email, mailbox string, v uint32) error {
	a, err := s.account(email)
	if err != nil {
		return err
	}
	if _, err := a.user.Status(mailbox, &imap.StatusOptions{}); err != nil {
		return fmt.Errorf("fakegmail: set uidvalidity of %s %s: %w", email, mailbox, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == 0 {
		delete(a.uidValidity, mailbox)
		return nil
	}
	if a.uidValidity == nil {
		a.uidValidity = make(map[string]uint32)
	}
	a.uidValidity[mailbox] = v
	return nil
}

// shownUIDValidity is the UIDVALIDITY of mailbox as clients see it: the
// one SetUIDValidity chose, else the backend's v.
func (s *Server) shownUIDValidity(a *account, mailbox string, v uint32) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if forced := a.uidValidity[mailbox]; forced != 0 {
		return forced
	}
	return v
}

// Status reports the UIDVALIDITY SetUIDValidity chose.
func (sess *session) Status(mailbox string, options *imap.StatusOptions) (*imap.StatusData, error) {
	data, err := sess.UserSession.Status(mailbox, options)
	if err == nil && options.UIDValidity {
		data.UIDValidity = sess.srv.shownUIDValidity(sess.acct, mailbox, data.UIDValidity)
	}
	return data, err
}
