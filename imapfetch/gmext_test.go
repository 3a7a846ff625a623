package imapfetch

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/tickets"
)

// scriptedFetch runs one FETCH of go-imap's client, over conn (wrapped by
// wrap), against a server that answers with the given FETCH response line
// and OK. It returns what the client parsed and the error it reported.
func scriptedFetch(t *testing.T, wrap func(net.Conn) net.Conn, opts *imap.FetchOptions, answer string) ([]*imapclient.FetchMessageBuffer, error, string) {
	t.Helper()
	cli, srv := net.Pipe()
	defer srv.Close()
	cmdLine := make(chan string, 1)
	go func() {
		r := bufio.NewReader(srv)
		srv.Write([]byte("* OK ready\r\n"))
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmdLine <- line
		tag, _, _ := strings.Cut(line, " ")
		srv.Write([]byte(answer + "\r\n" + tag + " OK done\r\n"))
		r.ReadString('\n') // until the client goes
	}()
	c := imapclient.New(wrap(cli), nil)
	defer c.Close()
	msgs, err := c.Fetch(imap.UIDSetNum(5), opts).Collect()
	select {
	case l := <-cmdLine:
		return msgs, err, l
	case <-time.After(5 * time.Second):
		t.Fatal("client sent no FETCH")
	}
	return nil, nil, ""
}

// go-imap's client cannot read X-GM-MSGID: an answer carrying it fails
// the command (and drops the connection). Through gmConn the same answer
// reads as the header sections gmFetchOptions asks for, and the command
// the server sees asks for X-GM-MSGID and X-GM-THRID.
func TestGoIMAPNeedsGmConnForGmailIDs(t *testing.T) {
	answer := `* 1 FETCH (X-GM-THRID 1278455344230334865 X-GM-MSGID 1278455344230334866 UID 5 BODY[] {4}` + "\r\nhi\r\n)"
	plain := func(c net.Conn) net.Conn { return c }
	if _, err, _ := scriptedFetch(t, plain, fetchOptions, answer); err == nil || !strings.Contains(err.Error(), "X-GM-") {
		t.Fatalf("go-imap alone reading X-GM items: err %v, want it to fail on them", err)
	}

	wrap := func(c net.Conn) net.Conn { return &gmConn{Conn: c} }
	msgs, err, sent := scriptedFetch(t, wrap, gmFetchOptions, answer)
	if err != nil {
		t.Fatalf("through gmConn: %v", err)
	}
	if !strings.Contains(sent, " X-GM-MSGID X-GM-THRID") || strings.Contains(sent, "HEADER.FIELDS") {
		t.Errorf("command on the wire %q: want Gmail's items", sent)
	}
	if len(msgs) != 1 || msgs[0].UID != 5 {
		t.Fatalf("parsed %+v, want UID 5", msgs)
	}
	m := msgs[0]
	if got := gmID(m.FindBodySection(gmMsgIDSection)); got != 1278455344230334866 {
		t.Errorf("X-GM-MSGID = %d", got)
	}
	if got := gmID(m.FindBodySection(gmThrIDSection)); got != 1278455344230334865 {
		t.Errorf("X-GM-THRID = %d", got)
	}
	if got := string(m.FindBodySection(bodyPeek)); got != "hi\r\n" {
		t.Errorf("body %q", got)
	}
}

// A server may send a message's items in any order (RFC 3501 section
// 7.4.2): Gmail's ids after the body, or split around it, read the same.
func TestGmConnItemsAfterTheBody(t *testing.T) {
	wrap := func(c net.Conn) net.Conn { return &gmConn{Conn: c} }
	for _, answer := range []string{
		`* 1 FETCH (UID 5 BODY[] {4}` + "\r\nhi\r\n X-GM-THRID 1278455344230334865 X-GM-MSGID 1278455344230334866)",
		`* 1 FETCH (X-GM-THRID 1278455344230334865 UID 5 BODY[] {4}` + "\r\nhi\r\n X-GM-MSGID 1278455344230334866 FLAGS ())",
	} {
		msgs, err, _ := scriptedFetch(t, wrap, gmFetchOptions, answer)
		if err != nil {
			t.Fatalf("%q through gmConn: %v", answer, err)
		}
		if len(msgs) != 1 || msgs[0].UID != 5 {
			t.Fatalf("%q parsed as %+v, want UID 5", answer, msgs)
		}
		m := msgs[0]
		if gmID(m.FindBodySection(gmMsgIDSection)) != 1278455344230334866 || gmID(m.FindBodySection(gmThrIDSection)) != 1278455344230334865 {
			t.Errorf("%q: ids %q %q", answer, m.FindBodySection(gmMsgIDSection), m.FindBodySection(gmThrIDSection))
		}
		if got := string(m.FindBodySection(bodyPeek)); got != "hi\r\n" {
			t.Errorf("%q: body %q", answer, got)
		}
	}
}

// sourceStore records the Source of each mail it stores.
type sourceStore struct {
	*tickets.Store
	mu   sync.Mutex
	srcs []tickets.Source
}

func (s *sourceStore) IngestBatch(ctx context.Context, mails []tickets.BatchMail) []tickets.BatchResult {
	s.mu.Lock()
	for _, m := range mails {
		s.srcs = append(s.srcs, m.Source)
	}
	s.mu.Unlock()
	return s.Store.IngestBatch(ctx, mails)
}

// Against the fake Gmail, each fetched mail carries the ids Gmail gave it;
// a mail without Message-ID is recognised by its X-GM-MSGID when the
// INBOX is renumbered, and two such mails with the same bytes, which are
// two mails to Gmail, are two tickets.
func TestGmailIDsFetchedAndDedupe(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.gm.AddUser(alice)
	noID := []byte("From: monitor@customer.test\r\nTo: " + alice + "\r\nSubject: disk full\r\n\r\nsda1 at 100%\r\n")
	reply := []byte("From: c0@customer.test\r\nTo: " + alice + "\r\nSubject: Re: x\r\nMessage-ID: <r@customer.test>\r\nIn-Reply-To: <m0." + alice + ">\r\n\r\nmore\r\n")
	e.deliver(alice, 0, false)
	for _, raw := range [][]byte{noID, noID, reply} {
		if _, err := e.gm.Deliver(alice, raw, false); err != nil {
			t.Fatal(err)
		}
	}
	// Imported as existing mail, which stays unread and so is fetched
	// again after a UIDVALIDITY change.
	nextSecond()
	e.connect(alice, 50)
	ss := &sourceStore{Store: e.st}
	f := New(e.acc, ss, e.options())
	if rep := pollOnce(t, f, alice); rep.Created != 3 || rep.Comments != 1 {
		t.Fatalf("poll = %+v, want 3 tickets (the two monitor mails apart) and one reply", rep)
	}
	if len(ss.srcs) != 4 {
		t.Fatalf("stored %d mails, want 4", len(ss.srcs))
	}
	for i, src := range ss.srcs {
		msg, thr, ok := e.gm.GmailIDs(alice, fakegmail.Inbox, imap.UID(i+1))
		if !ok || src.GmailMsgID != msg || src.GmailThreadID != thr {
			t.Errorf("mail %d: Source ids %d/%d, Gmail's %d/%d", i+1, src.GmailMsgID, src.GmailThreadID, msg, thr)
		}
	}
	if ss.srcs[3].GmailThreadID != ss.srcs[0].GmailMsgID {
		t.Errorf("the reply's X-GM-THRID %d is not its conversation's %d", ss.srcs[3].GmailThreadID, ss.srcs[0].GmailMsgID)
	}

	if _, err := e.gm.ResetUIDValidity(alice); err != nil {
		t.Fatal(err)
	}
	if rep := pollOnce(t, f, alice); rep.Created != 0 || rep.Duplicates != 4 {
		t.Fatalf("poll after UIDVALIDITY change = %+v, want the 4 mails as duplicates", rep)
	}
	if n := e.ticketCount(); n != 3 {
		t.Errorf("%d tickets, want 3", n)
	}
}

// A mail Gmail files in a conversation that has a ticket joins that ticket
// (threaded_by gmail-thread) when its sender takes part in it, though its
// headers name nothing; a stranger in the same conversation opens a ticket.
func TestGmailThreadJoinsTicket(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	f := New(e.acc, e.st, e.options())
	pollOnce(t, f, alice)

	uid := e.deliver(alice, 0, false)
	if rep := pollOnce(t, f, alice); rep.Created != 1 {
		t.Fatalf("first poll %+v, want a ticket", rep)
	}
	_, thr, _ := e.gm.GmailIDs(alice, fakegmail.Inbox, uid)
	for _, from := range []string{"c0@customer.test", "stranger@elsewhere.test"} {
		raw := []byte("From: " + from + "\r\nTo: " + alice + "\r\nSubject: one more thing\r\n" +
			"Message-ID: <" + strings.Split(from, "@")[0] + ".more@customer.test>\r\n\r\nalso this\r\n")
		if _, err := e.gm.DeliverInThread(alice, raw, false, thr); err != nil {
			t.Fatal(err)
		}
	}
	if rep := pollOnce(t, f, alice); rep.Created != 1 || rep.Comments != 1 {
		t.Fatalf("poll = %+v, want one comment and the stranger's ticket", rep)
	}
	var first *tickets.Ticket
	for _, tk := range e.tickets() {
		if tk.Requester.Email == "c0@customer.test" {
			first = tk
		}
	}
	if first == nil {
		t.Fatalf("no ticket of c0 in %v", e.tickets())
	}
	full, err := e.st.Get(context.Background(), first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Comments) != 2 || full.Comments[1].ThreadedBy != "gmail-thread" {
		t.Errorf("ticket %d: %d comments, second threaded by %q; want gmail-thread", full.ID, len(full.Comments), full.Comments[len(full.Comments)-1].ThreadedBy)
	}
}
