// This file talks to the running Dovecot as a client: logging in as a
// user, delivering or appending mail, and reading flags back.

package dovecottest

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// opTimeout bounds one helper call (or one message of DeliverMany), so a
// wedged server fails the test instead of hanging it until go test's
// timeout.
const opTimeout = 30 * time.Second

// Dial connects to the server without logging in. The client is closed
// when the test ends.
func (s *Server) Dial(t testing.TB, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(s.addr, opts)
	if err != nil {
		t.Fatalf("dovecottest: dial %s: %v", s.addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Login dials and logs in as user with Password. The client is closed when
// the test ends.
func (s *Server) Login(t testing.TB, user string) *imapclient.Client {
	t.Helper()
	c := s.Dial(t, nil)
	if err := c.Login(user, Password).Wait(); err != nil {
		t.Fatalf("dovecottest: LOGIN %s: %v", user, err)
	}
	return c
}

// session is a helper's own connection, logged in as one user.
type session struct {
	c  *imapclient.Client
	nc net.Conn
}

func (s *Server) session(user string) (*session, error) {
	if !s.hasUser(user) {
		return nil, fmt.Errorf("dovecottest: %s is not one of Options.Users", user)
	}
	nc, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dovecottest: %w", err)
	}
	nc.SetDeadline(time.Now().Add(opTimeout))
	c := imapclient.New(nc, nil)
	if err := c.Login(user, Password).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("dovecottest: LOGIN %s: %w", user, err)
	}
	return &session{c: c, nc: nc}, nil
}

// extend gives the session another opTimeout.
func (ss *session) extend() { ss.nc.SetDeadline(time.Now().Add(opTimeout)) }

func (ss *session) close() {
	ss.c.Logout().Wait()
	ss.c.Close()
}

// Deliver appends raw to user's INBOX, as if it had just arrived, with
// \Seen if seen, and returns its UID (from UIDPLUS's APPENDUID). Clients in
// IDLE on the INBOX get an EXISTS response.
//
// It uses IMAP APPEND rather than doveadm save or dovecot-lda: one
// connection can append thousands of mails quickly (DeliverMany), and the
// \Seen flag goes in with the mail, with no window where it is unseen.
func (s *Server) Deliver(user string, raw []byte, seen bool) (imap.UID, error) {
	uids, err := s.DeliverMany(user, [][]byte{raw}, seen)
	if err != nil {
		return 0, err
	}
	return uids[0], nil
}

// DeliverMany appends every message of raws to user's INBOX over a single
// connection, in order, and returns their UIDs.
func (s *Server) DeliverMany(user string, raws [][]byte, seen bool) ([]imap.UID, error) {
	return s.appendMany(user, "INBOX", raws, seen)
}

// Append appends raw to user's mailbox (which must exist, e.g. one that
// Options.Extra has Dovecot create), with \Seen if seen, and returns its
// UID.
func (s *Server) Append(user, mailbox string, raw []byte, seen bool) (imap.UID, error) {
	uids, err := s.appendMany(user, mailbox, [][]byte{raw}, seen)
	if err != nil {
		return 0, err
	}
	return uids[0], nil
}

func (s *Server) appendMany(user, mailbox string, raws [][]byte, seen bool) ([]imap.UID, error) {
	ss, err := s.session(user)
	if err != nil {
		return nil, err
	}
	defer ss.close()
	var opts *imap.AppendOptions
	if seen {
		opts = &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}}
	}
	uids := make([]imap.UID, 0, len(raws))
	for i, raw := range raws {
		ss.extend()
		cmd := ss.c.Append(mailbox, int64(len(raw)), opts)
		if _, err := cmd.Write(raw); err != nil {
			cmd.Close()
			return uids, fmt.Errorf("dovecottest: APPEND %d of %d to %s %s: %w", i+1, len(raws), user, mailbox, err)
		}
		if err := cmd.Close(); err != nil {
			return uids, fmt.Errorf("dovecottest: APPEND %d of %d to %s %s: %w", i+1, len(raws), user, mailbox, err)
		}
		data, err := cmd.Wait()
		if err != nil {
			return uids, fmt.Errorf("dovecottest: APPEND %d of %d to %s %s: %w", i+1, len(raws), user, mailbox, err)
		}
		uids = append(uids, data.UID)
	}
	return uids, nil
}

// IsSeen reports whether the INBOX messages whose Message-ID header is
// messageID (with or without the angle brackets) all have \Seen. It fails
// if there is none.
func (s *Server) IsSeen(user, messageID string) (bool, error) {
	if !strings.HasPrefix(messageID, "<") {
		messageID = "<" + messageID + ">"
	}
	ss, err := s.session(user)
	if err != nil {
		return false, err
	}
	defer ss.close()
	// EXAMINE, not SELECT: a read-only look leaves \Recent to the client
	// under test.
	if _, err := ss.c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		return false, fmt.Errorf("dovecottest: EXAMINE INBOX of %s: %w", user, err)
	}
	// SEARCH HEADER is a substring match (RFC 3501 section 6.4.4); the
	// brackets make it exact enough, and the FETCH below checks.
	data, err := ss.c.UIDSearch(&imap.SearchCriteria{
		Header: []imap.SearchCriteriaHeaderField{{Key: "Message-ID", Value: messageID}},
	}, nil).Wait()
	if err != nil {
		return false, fmt.Errorf("dovecottest: SEARCH %s in %s: %w", messageID, user, err)
	}
	uids := data.AllUIDs()
	if len(uids) == 0 {
		return false, fmt.Errorf("dovecottest: no message %s in %s's INBOX", messageID, user)
	}
	hdr := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Message-ID"}, Peek: true}
	msgs, err := ss.c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{
		Flags:       true,
		BodySection: []*imap.FetchItemBodySection{hdr},
	}).Collect()
	if err != nil {
		return false, fmt.Errorf("dovecottest: FETCH %s in %s: %w", messageID, user, err)
	}
	found := false
	for _, m := range msgs {
		if !bytes.Contains(m.FindBodySection(hdr), []byte(messageID)) {
			continue
		}
		found = true
		if !hasFlag(m.Flags, imap.FlagSeen) {
			return false, nil
		}
	}
	if !found {
		return false, fmt.Errorf("dovecottest: no message %s in %s's INBOX", messageID, user)
	}
	return true, nil
}

// Count returns the number of messages in user's INBOX.
func (s *Server) Count(user string) (int, error) {
	st, err := s.status(user)
	if err != nil {
		return 0, err
	}
	return int(*st.NumMessages), nil
}

// Unseen returns the number of messages without \Seen in user's INBOX.
func (s *Server) Unseen(user string) (int, error) {
	st, err := s.status(user)
	if err != nil {
		return 0, err
	}
	return int(*st.NumUnseen), nil
}

func (s *Server) status(user string) (*imap.StatusData, error) {
	ss, err := s.session(user)
	if err != nil {
		return nil, err
	}
	defer ss.close()
	st, err := ss.c.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumUnseen: true}).Wait()
	if err != nil {
		return nil, fmt.Errorf("dovecottest: STATUS INBOX of %s: %w", user, err)
	}
	if st.NumMessages == nil || st.NumUnseen == nil {
		return nil, fmt.Errorf("dovecottest: STATUS INBOX of %s lacks MESSAGES or UNSEEN", user)
	}
	return st, nil
}

func hasFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, g := range flags {
		if strings.EqualFold(string(g), string(f)) {
			return true
		}
	}
	return false
}

// Flags returns, for every message in user's INBOX, whether it has \Seen,
// by UID: one FETCH, where IsSeen costs a search per message.
func (s *Server) Flags(user string) (map[imap.UID]bool, error) {
	ss, err := s.session(user)
	if err != nil {
		return nil, err
	}
	defer ss.close()
	// EXAMINE: a read-only look leaves \Recent to the client under test.
	sel, err := ss.c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return nil, fmt.Errorf("dovecottest: EXAMINE INBOX of %s: %w", user, err)
	}
	seen := make(map[imap.UID]bool, sel.NumMessages)
	if sel.NumMessages == 0 {
		return seen, nil
	}
	var all imap.UIDSet
	all.AddRange(1, 0) // 1:*
	msgs, err := ss.c.Fetch(all, &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil {
		return nil, fmt.Errorf("dovecottest: FETCH FLAGS in %s: %w", user, err)
	}
	for _, m := range msgs {
		seen[m.UID] = hasFlag(m.Flags, imap.FlagSeen)
	}
	return seen, nil
}
