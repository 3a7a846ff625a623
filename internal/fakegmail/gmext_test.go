package fakegmail

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// rawIMAP is a line-level IMAP client, for what go-imap's client cannot
// send or parse (X-GM-EXT-1).
type rawIMAP struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	seq  int
}

func dialRaw(t *testing.T, addr, user, token string) *rawIMAP {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := &rawIMAP{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.line() // greeting
	ir := base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
	if _, status := c.cmd("AUTHENTICATE XOAUTH2 " + ir); !strings.HasPrefix(status, "OK") {
		t.Fatalf("login: %s", status)
	}
	return c
}

func (c *rawIMAP) line() string {
	c.t.Helper()
	s, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (partial %q)", err, s)
	}
	// A literal is read whole and appended, so one response is one string.
	if m := regexp.MustCompile(`\{(\d+)\}\r\n$`).FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		buf := make([]byte, n)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			c.t.Fatalf("read literal: %v", err)
		}
		return s + string(buf) + c.line()
	}
	return strings.TrimRight(s, "\r\n")
}

// cmd sends one command and returns its untagged responses and the status
// (OK/NO/BAD and text) of its tagged one.
func (c *rawIMAP) cmd(command string) (untagged []string, status string) {
	c.t.Helper()
	c.seq++
	tag := fmt.Sprintf("g%d", c.seq)
	if _, err := fmt.Fprintf(c.conn, "%s %s\r\n", tag, command); err != nil {
		c.t.Fatalf("send %q: %v", command, err)
	}
	for {
		l := c.line()
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			return untagged, rest
		}
		untagged = append(untagged, l)
	}
}

func (c *rawIMAP) ok(command string) []string {
	c.t.Helper()
	untagged, status := c.cmd(command)
	if !strings.HasPrefix(status, "OK") {
		c.t.Fatalf("%s: %s", command, status)
	}
	return untagged
}

// gmIDsOf parses X-GM-MSGID and X-GM-THRID out of a FETCH response.
func gmIDsOf(t *testing.T, resp string) (msgID, thrID uint64) {
	t.Helper()
	get := func(item string) uint64 {
		m := regexp.MustCompile(item + ` (\d+)`).FindStringSubmatch(resp)
		if m == nil {
			t.Fatalf("FETCH response %q has no %s", resp, item)
		}
		v, err := strconv.ParseUint(m[1], 10, 64)
		if err != nil {
			t.Fatalf("%s in %q: %v", item, resp, err)
		}
		return v
	}
	return get("X-GM-MSGID"), get("X-GM-THRID")
}

func gmMail(id, subject, inReplyTo, body string) []byte {
	s := "From: Carol <carol@example.net>\r\nTo: alice@example.com\r\n" +
		"Subject: " + subject + "\r\nMessage-ID: <" + id + ">\r\n"
	if inReplyTo != "" {
		s += "In-Reply-To: <" + inReplyTo + ">\r\nReferences: <" + inReplyTo + ">\r\n"
	}
	return []byte(s + "\r\n" + body + "\r\n")
}

func deliver(t *testing.T, srv *Server, raw []byte) uint32 {
	t.Helper()
	uid, err := srv.Deliver(alice, raw, false)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(uid)
}

// A mail's X-GM-MSGID is a 64-bit number that stays with it in every
// folder and across a UIDVALIDITY change; a reply shares its thread id.
func TestGmailIDsFetch(t *testing.T) {
	srv, addr := newServer(t, Options{})
	deliver(t, srv, gmMail("first@example.net", "printer", "", "it is on fire"))
	deliver(t, srv, gmMail("other@example.net", "coffee", "", "empty"))
	deliver(t, srv, gmMail("reply@example.net", "Re: printer", "first@example.net", "still burning"))

	c := dialRaw(t, addr, alice, aliceToken)
	c.ok("SELECT INBOX")
	resp := c.ok("FETCH 1:3 (X-GM-MSGID X-GM-THRID FLAGS)")
	if len(resp) != 3 {
		t.Fatalf("FETCH 1:3 answered %q", resp)
	}
	var msg, thr [3]uint64
	for i, r := range resp {
		if !strings.HasPrefix(r, fmt.Sprintf("* %d FETCH (UID %d ", i+1, i+1)) || !strings.Contains(r, "FLAGS") {
			t.Errorf("response %q: want UID and FLAGS too", r)
		}
		msg[i], thr[i] = gmIDsOf(t, r)
		if msg[i] < 1<<60 {
			t.Errorf("X-GM-MSGID %d: want a 64-bit number as large as Gmail's", msg[i])
		}
	}
	if msg[0] == msg[1] || msg[1] == msg[2] || msg[0] == msg[2] {
		t.Errorf("X-GM-MSGIDs %v are not unique", msg)
	}
	if thr[0] != msg[0] || thr[1] != msg[1] {
		t.Errorf("a new conversation's X-GM-THRID is its first mail's X-GM-MSGID: got %v for %v", thr, msg)
	}
	if thr[2] != thr[0] {
		t.Errorf("reply X-GM-THRID %d, want its conversation's %d", thr[2], thr[0])
	}
	if m, th, ok := srv.GmailIDs(alice, Inbox, 3); !ok || m != msg[2] || th != thr[2] {
		t.Errorf("GmailIDs(3) = %d %d %v, want what FETCH said", m, th, ok)
	}

	// Copied to another folder: the same mail, the same ids.
	c.ok("CREATE Archive")
	c.ok("UID COPY 1 Archive")
	c.ok("UID MOVE 3 Archive")
	c.ok("SELECT Archive")
	arch := c.ok("UID FETCH 1:* (X-GM-MSGID X-GM-THRID)")
	if len(arch) != 2 {
		t.Fatalf("Archive FETCH answered %q", arch)
	}
	for i, want := range []int{0, 2} {
		if m, th := gmIDsOf(t, arch[i]); m != msg[want] || th != thr[want] {
			t.Errorf("copy %q: ids %d %d, want %d %d", arch[i], m, th, msg[want], thr[want])
		}
	}
	// A plain FETCH after them carries no Gmail ids it did not ask for.
	if plain := c.ok("FETCH 1 (FLAGS)"); len(plain) != 1 || strings.Contains(plain[0], "X-GM-") {
		t.Errorf("FETCH FLAGS answered %q", plain)
	}

	// INBOX renumbered: new UIDs, the same ids.
	if _, err := srv.ResetUIDValidity(alice); err != nil {
		t.Fatal(err)
	}
	c = dialRaw(t, addr, alice, aliceToken)
	c.ok("SELECT INBOX")
	after := c.ok("UID FETCH 1:* (X-GM-MSGID)")
	if len(after) != 2 {
		t.Fatalf("INBOX after reset: %q", after)
	}
	for i, want := range []int{0, 1} {
		if m, _ := gmIDsOf(t, after[i]+" X-GM-THRID 0"); m != msg[want] {
			t.Errorf("after reset %q: X-GM-MSGID %d, want %d", after[i], m, msg[want])
		}
	}
}

// Ids are per account: bob's copy of the same mail is another Gmail mail.
func TestGmailIDsPerAccount(t *testing.T) {
	srv, addr := newServer(t, Options{})
	raw := gmMail("shared@example.net", "to both", "", "hi")
	deliver(t, srv, raw)
	if _, err := srv.Deliver(bob, raw, false); err != nil {
		t.Fatal(err)
	}
	a := dialRaw(t, addr, alice, aliceToken)
	a.ok("SELECT INBOX")
	b := dialRaw(t, addr, bob, bobToken)
	b.ok("SELECT INBOX")
	am, _ := gmIDsOf(t, a.ok("FETCH 1 (X-GM-MSGID X-GM-THRID)")[0])
	bm, _ := gmIDsOf(t, b.ok("FETCH 1 (X-GM-MSGID X-GM-THRID)")[0])
	if am == bm {
		t.Errorf("alice and bob share X-GM-MSGID %d", am)
	}
}

// DeliverInThread puts a mail into a conversation its headers do not name;
// a reply to it follows.
func TestDeliverInThread(t *testing.T) {
	srv, _ := newServer(t, Options{})
	deliver(t, srv, gmMail("root@example.net", "order 17", "", "where is it"))
	_, root, _ := srv.GmailIDs(alice, Inbox, 1)
	uid, err := srv.DeliverInThread(alice, gmMail("loose@example.net", "order 17 shipped", "", "today"), false, root)
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, srv, gmMail("answer@example.net", "Re: shipped", "loose@example.net", "thanks"))
	for _, u := range []uint32{uint32(uid), 3} {
		if _, th, _ := srv.GmailIDs(alice, Inbox, imap.UID(u)); th != root {
			t.Errorf("UID %d thread %d, want %d", u, th, root)
		}
	}
	if _, err := srv.DeliverInThread(alice, gmMail("x@example.net", "x", "", "x"), false, 0); err == nil {
		t.Error("DeliverInThread with thread 0 succeeded")
	}
}

// X-GM-RAW understands rfc822msgid: and free words; SEARCH X-GM-MSGID and
// X-GM-THRID find mails by id; what the fake does not understand is BAD.
func TestGmailSearch(t *testing.T) {
	srv, addr := newServer(t, Options{})
	deliver(t, srv, gmMail("a1@example.net", "invoice 42", "", "please pay"))
	deliver(t, srv, gmMail("b2@example.net", "lunch", "", "pizza or sushi"))
	deliver(t, srv, gmMail("c3@example.net", "Re: invoice 42", "a1@example.net", "paid today"))
	_, thr, _ := srv.GmailIDs(alice, Inbox, 1)
	msg2, _, _ := srv.GmailIDs(alice, Inbox, 2)

	c := dialRaw(t, addr, alice, aliceToken)
	c.ok("SELECT INBOX")
	for _, tc := range []struct{ query, want string }{
		{`X-GM-RAW "rfc822msgid:<b2@example.net>"`, "* SEARCH 2"},
		{`X-GM-RAW "rfc822msgid:c3@example.net"`, "* SEARCH 3"},
		{`X-GM-RAW "invoice"`, "* SEARCH 1 3"},
		{`X-GM-RAW "invoice paid"`, "* SEARCH 3"},
		{`X-GM-RAW "\"or sushi\""`, "* SEARCH 2"},
		{`X-GM-RAW "subject:lunch"`, "* SEARCH 2"},
		{`X-GM-RAW "rfc822msgid:<nobody@example.net>"`, "* SEARCH"},
		{`X-GM-MSGID ` + strconv.FormatUint(msg2, 10), "* SEARCH 2"},
		{`X-GM-THRID ` + strconv.FormatUint(thr, 10), "* SEARCH 1 3"},
		{`X-GM-MSGID 12345`, "* SEARCH"},
		{`UNSEEN X-GM-RAW "pizza"`, "* SEARCH 2"},
	} {
		got := c.ok("UID SEARCH " + tc.query)
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("UID SEARCH %s = %q, want %q", tc.query, got, tc.want)
		}
	}
	for _, query := range []string{
		`X-GM-RAW "has:attachment"`,
		`X-GM-RAW "invoice OR lunch"`,
		`X-GM-RAW "-lunch"`,
		`X-GM-RAW "(invoice)"`,
		`X-GM-RAW ""`,
		`X-GM-MSGID abc`,
	} {
		if _, status := c.cmd("SEARCH " + query); !strings.HasPrefix(status, "BAD") {
			t.Errorf("SEARCH %s = %q, want BAD", query, status)
		}
	}
	// The connection is still usable after a BAD.
	c.ok("NOOP")
}

// A mail APPENDed by a client gets ids too, and threads like a delivery.
func TestGmailIDsAppend(t *testing.T) {
	srv, addr := newServer(t, Options{})
	deliver(t, srv, gmMail("q@example.net", "question", "", "?"))
	_, thr, _ := srv.GmailIDs(alice, Inbox, 1)
	c := dialRaw(t, addr, alice, aliceToken)
	reply := string(gmMail("a@example.net", "Re: question", "q@example.net", "!"))
	c.ok(fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(reply), reply))
	if _, th, ok := srv.GmailIDs(alice, Inbox, 2); !ok || th != thr {
		t.Errorf("appended reply: thread %d (found %v), want %d", th, ok, thr)
	}
}
