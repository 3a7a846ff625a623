package fakegmail

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// CapGmailExt is the capability Gmail announces for its IMAP extensions
// (X-GM-MSGID, X-GM-THRID, X-GM-RAW, X-GM-LABELS; the fake has no labels).
const CapGmailExt = "X-GM-EXT-1"

// firstMsgID is where the fake starts numbering X-GM-MSGIDs. Gmail's are
// 64-bit numbers of this size (e.g. 1278455344230334865): too big for a
// float64, so a client that stores them as numbers loses digits, and tests
// should see that happen.
const firstMsgID uint64 = 1_600_000_000_000_000_001

// gmIDs are one stored mail's Gmail ids: X-GM-MSGID names the mail in
// every folder (Gmail's labels are one mail seen in several places), and
// X-GM-THRID its conversation, the X-GM-MSGID of the conversation's first
// mail.
type gmIDs struct {
	msgID, thrID uint64
}

// gmLoc is where a mail is stored: mailbox name and UID in it.
type gmLoc struct {
	mailbox string
	uid     imap.UID
}

// gmBook is an account's X-GM-EXT-1 bookkeeping, guarded by Server.mu.
// The memory backend cannot carry extra data per message, so the ids live
// here, keyed by location, and follow the mail through COPY, MOVE, RENAME
// and ResetUIDValidity.
type gmBook struct {
	at     map[gmLoc]gmIDs
	thread map[string]uint64 // Message-ID (without <>) -> X-GM-THRID
}

func newGMBook() *gmBook {
	return &gmBook{at: make(map[gmLoc]gmIDs), thread: make(map[string]uint64)}
}

// newIDs gives a newly stored mail its ids. thrID 0 means: the conversation
// of the earliest mail of the account that In-Reply-To or References names,
// else a conversation of its own, as Gmail threads by these headers.
func (s *Server) newIDs(a *account, raw []byte, thrID uint64) gmIDs {
	hdr, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	h := mail.Header{Header: message.Header{Header: hdr}}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gmSeq++
	ids := gmIDs{msgID: firstMsgID + s.gmSeq - 1}
	if thrID == 0 && err == nil {
		refs, _ := h.MsgIDList("References")
		irt, _ := h.MsgIDList("In-Reply-To")
		for _, id := range append(irt, refs...) {
			if t, ok := a.gm.thread[id]; ok {
				thrID = t
				break
			}
		}
	}
	if thrID == 0 {
		thrID = ids.msgID
	}
	ids.thrID = thrID
	if err == nil {
		if id, _ := h.MessageID(); id != "" {
			if _, seen := a.gm.thread[id]; !seen {
				a.gm.thread[id] = thrID
			}
		}
	}
	return ids
}

// file records ids for a mail at mailbox/uid.
func (s *Server) file(a *account, mailbox string, uid imap.UID, ids gmIDs) {
	s.mu.Lock()
	a.gm.at[gmLoc{mailbox, uid}] = ids
	s.mu.Unlock()
}

// copied gives the copies of a COPY or MOVE the ids of their originals.
func (s *Server) copied(a *account, from, to string, src, dst imap.UIDSet) {
	srcUIDs, ok1 := src.Nums()
	dstUIDs, ok2 := dst.Nums()
	if !ok1 || !ok2 || len(srcUIDs) != len(dstUIDs) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, uid := range srcUIDs {
		if ids, ok := a.gm.at[gmLoc{from, uid}]; ok {
			a.gm.at[gmLoc{to, dstUIDs[i]}] = ids
		}
	}
}

// renumbered gives the mails of a mailbox rebuilt with new UIDs
// (ResetUIDValidity) their ids under the new UIDs.
func (s *Server) renumbered(a *account, mailbox string, oldUIDs, newUIDs imap.UIDSet) {
	olds, ok1 := oldUIDs.Nums()
	news, ok2 := newUIDs.Nums()
	if !ok1 || !ok2 || len(olds) != len(news) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	moved := make(map[imap.UID]gmIDs, len(olds))
	for i, uid := range olds {
		if ids, ok := a.gm.at[gmLoc{mailbox, uid}]; ok {
			moved[news[i]] = ids
		}
	}
	for loc := range a.gm.at {
		if loc.mailbox == mailbox {
			delete(a.gm.at, loc)
		}
	}
	for uid, ids := range moved {
		a.gm.at[gmLoc{mailbox, uid}] = ids
	}
}

// renamed moves the ids of a renamed mailbox (and its children) along.
func (s *Server) renamed(a *account, from, to string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for loc, ids := range a.gm.at {
		if loc.mailbox == from || strings.HasPrefix(loc.mailbox, from+"/") {
			delete(a.gm.at, loc)
			a.gm.at[gmLoc{to + strings.TrimPrefix(loc.mailbox, from), loc.uid}] = ids
		}
	}
}

// lookupIDs returns the ids of the mail at mailbox/uid of account email.
func (s *Server) lookupIDs(email, mailbox string, uid imap.UID) (gmIDs, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[strings.ToLower(email)]
	if a == nil {
		return gmIDs{}, false
	}
	ids, ok := a.gm.at[gmLoc{mailbox, uid}]
	return ids, ok
}

// uidsWith returns the UIDs in mailbox whose X-GM-MSGID (or, with thread,
// X-GM-THRID) is id, for SEARCH X-GM-MSGID / X-GM-THRID.
func (s *Server) uidsWith(email, mailbox string, id uint64, thread bool) []imap.UID {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[strings.ToLower(email)]
	if a == nil {
		return nil
	}
	var uids []imap.UID
	for loc, ids := range a.gm.at {
		v := ids.msgID
		if thread {
			v = ids.thrID
		}
		if loc.mailbox == mailbox && v == id {
			uids = append(uids, loc.uid)
		}
	}
	return uids
}

// GmailIDs returns the X-GM-MSGID and X-GM-THRID of the message with the
// given UID in the account's mailbox; ok is false if there is none.
func (s *Server) GmailIDs(email, mailbox string, uid imap.UID) (msgID, thrID uint64, ok bool) {
	ids, ok := s.lookupIDs(email, mailbox, uid)
	return ids.msgID, ids.thrID, ok
}

// DeliverInThread is Deliver, with the mail put in the Gmail conversation
// thrID whatever its headers say (Gmail also threads by subject and
// timing, which the fake does not imitate). Later mails that reference it
// join that conversation too.
func (s *Server) DeliverInThread(email string, raw []byte, seen bool, thrID uint64) (imap.UID, error) {
	if thrID == 0 {
		return 0, fmt.Errorf("fakegmail: deliver in thread: thread id 0")
	}
	return s.deliver(email, raw, seen, thrID)
}

// Copy keeps each copy's Gmail ids: in Gmail a copy is the same mail with
// one more label.
func (sess *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	defer sess.srv.wake(sess.acct)
	sess.srv.storeMu.Lock()
	defer sess.srv.storeMu.Unlock()
	data, err := sess.UserSession.Copy(numSet, dest)
	if err == nil {
		sess.srv.copied(sess.acct, sess.selected, dest, data.SourceUIDs, data.DestUIDs)
	}
	return data, err
}

// Move keeps the Gmail ids of the moved mails. The memory backend sends
// the new UIDs straight to the client, so they are worked out here: the
// moved mails' UIDs, in order, and the UIDs the destination hands out
// next, in the same order (storeMu keeps other appends out meanwhile).
func (sess *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	defer sess.srv.wake(sess.acct)
	sess.srv.storeMu.Lock()
	defer sess.srv.storeMu.Unlock()
	c := &imap.SearchCriteria{}
	switch set := numSet.(type) {
	case imap.UIDSet:
		c.UID = []imap.UIDSet{set}
	case imap.SeqSet:
		c.SeqNum = []imap.SeqSet{set}
	}
	found, ferr := sess.UserSession.Search(imapserver.NumKindUID, c, &imap.SearchOptions{})
	st, serr := sess.acct.user.Status(dest, &imap.StatusOptions{UIDNext: true})
	if err := sess.UserSession.Move(w, numSet, dest); err != nil {
		return err
	}
	if ferr != nil || serr != nil {
		return nil
	}
	src, _ := found.All.(imap.UIDSet)
	nums, _ := src.Nums()
	var dst imap.UIDSet
	if len(nums) > 0 {
		dst.AddRange(st.UIDNext, st.UIDNext+imap.UID(len(nums)-1))
	}
	sess.srv.copied(sess.acct, sess.selected, dest, src, dst)
	return nil
}

// Rename keeps the Gmail ids of the renamed mailbox's mails.
func (sess *session) Rename(mailbox, newName string, options *imap.RenameOptions) error {
	if err := sess.UserSession.Rename(mailbox, newName, options); err != nil {
		return err
	}
	sess.srv.renamed(sess.acct, mailbox, newName)
	return nil
}

// Delete forgets the ids of the deleted mailbox's mails: a mailbox created
// later under the name numbers its UIDs from 1 again.
func (sess *session) Delete(mailbox string) error {
	if err := sess.UserSession.Delete(mailbox); err != nil {
		return err
	}
	sess.srv.mu.Lock()
	for loc := range sess.acct.gm.at {
		if loc.mailbox == mailbox {
			delete(sess.acct.gm.at, loc)
		}
	}
	sess.srv.mu.Unlock()
	return nil
}

// Select remembers the selected mailbox: FETCH X-GM-MSGID looks ids up by
// mailbox and UID. It reports the UIDVALIDITY SetUIDValidity chose.
func (sess *session) Select(mailbox string, options *imap.SelectOptions) (*imap.SelectData, error) {
	data, err := sess.UserSession.Select(mailbox, options)
	if err == nil {
		data.UIDValidity = sess.srv.shownUIDValidity(sess.acct, mailbox, data.UIDValidity)
		sess.selected = mailbox
		if sess.wire != nil {
			sess.wire.setSelected(mailbox)
		}
	}
	return data, err
}

// Unselect forgets the selected mailbox.
func (sess *session) Unselect() error {
	sess.selected = ""
	if sess.wire != nil {
		sess.wire.setSelected("")
	}
	return sess.UserSession.Unselect()
}
