// This file is the account's Sent folder: where Gmail files what the
// account sends, marked \Sent in LIST (RFC 6154) whatever its localised
// name.

package fakegmail

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// AppendSent appends raw to the account's Sent folder, read, as Gmail does
// with mail the account sends (from its web interface, or over SMTP), and
// returns its UID.
func (s *Server) AppendSent(email string, raw []byte) (imap.UID, error) {
	a, err := s.account(email)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	name := a.sent
	s.mu.Unlock()
	data, err := a.user.Append(name, bytes.NewReader(raw), &imap.AppendOptions{Time: time.Now(), Flags: []imap.Flag{imap.FlagSeen}})
	if err != nil {
		return 0, fmt.Errorf("fakegmail: append to %s of %s: %w", name, email, err)
	}
	s.wake(a)
	return data.UID, nil
}

// SetSentName renames the account's Sent folder, e.g. to
// "[Gmail]/Gesendet" as a German Gmail names it; LIST still marks it \Sent.
func (s *Server) SetSentName(email, name string) error {
	a, err := s.account(email)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := a.user.Rename(a.sent, name, nil); err != nil {
		return fmt.Errorf("fakegmail: rename %s of %s: %w", a.sent, email, err)
	}
	a.sent = name
	return nil
}

// specialUse returns the RFC 6154 attribute of the account's mailbox name,
// or "".
func (s *Server) specialUse(email, name string) imap.MailboxAttr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[strings.ToLower(email)]; a != nil && a.sent == name {
		return imap.MailboxAttrSent
	}
	return ""
}
