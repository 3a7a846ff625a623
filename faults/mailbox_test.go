package faults

import (
	"os"
	"os/exec"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/internal/dovecottest"
	"github.com/mailgate/mailgate/internal/fakeworld"
)

// mailbox is the IMAP server mailgate fetches from: a real Dovecot where
// it is installed, else the in-process fake Gmail.
type mailbox interface {
	Name() string
	Addr() string
	// Deliver appends a new, unread mail and returns its UID.
	Deliver(raw []byte) (imap.UID, error)
	// Seen says, of uids, which have \Seen.
	Seen(uids []imap.UID) (map[imap.UID]bool, error)
}

// newMailbox starts the mailbox of account: Dovecot checking XOAUTH2
// tokens against the fake Google, or the fake Gmail of fakes.
func newMailbox(t *testing.T, fakes *fakeworld.World, account string) mailbox {
	t.Helper()
	if dovecotInstalled() {
		dv := dovecottest.Start(t, dovecottest.Options{Users: []string{account}, TokeninfoURL: fakes.OAuth.TokeninfoURL()})
		return &dovecotBox{dv: dv, user: account}
	}
	fakes.IMAP.AddUser(account)
	return &gmailBox{w: fakes, user: account}
}

func dovecotInstalled() bool {
	if _, err := exec.LookPath("dovecot"); err == nil {
		return true
	}
	_, err := os.Stat("/usr/sbin/dovecot")
	return err == nil
}

type dovecotBox struct {
	dv   *dovecottest.Server
	user string
}

func (b *dovecotBox) Name() string { return "Dovecot" }
func (b *dovecotBox) Addr() string { return b.dv.Addr() }
func (b *dovecotBox) Deliver(raw []byte) (imap.UID, error) {
	return b.dv.Deliver(b.user, raw, false)
}
func (b *dovecotBox) Seen(uids []imap.UID) (map[imap.UID]bool, error) {
	all, err := b.dv.Flags(b.user)
	if err != nil {
		return nil, err
	}
	out := make(map[imap.UID]bool, len(uids))
	for _, u := range uids {
		out[u] = all[u]
	}
	return out, nil
}

type gmailBox struct {
	w    *fakeworld.World
	user string
}

func (b *gmailBox) Name() string { return "the fake Gmail" }
func (b *gmailBox) Addr() string { return b.w.IMAPAddr }
func (b *gmailBox) Deliver(raw []byte) (imap.UID, error) {
	return b.w.IMAP.Deliver(b.user, raw, false)
}
func (b *gmailBox) Seen(uids []imap.UID) (map[imap.UID]bool, error) {
	out := make(map[imap.UID]bool, len(uids))
	for _, u := range uids {
		out[u] = b.w.IMAP.IsSeen(b.user, u)
	}
	return out, nil
}
