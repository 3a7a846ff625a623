package fakegmail

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/mailgate/mailgate/internal/testcert"
)

const (
	alice      = "alice@example.com"
	bob        = "bob@example.com"
	aliceToken = "ya29.alice"
	bobToken   = "ya29.bob"

	// What imap.gmail.com sends after rejecting a token.
	gmailChallengeB64 = "eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ=="
)

const testMsg = "From: Carol <carol@example.net>\r\n" +
	"To: alice@example.com\r\n" +
	"Subject: printer on fire\r\n" +
	"Message-ID: <1@example.net>\r\n" +
	"\r\n" +
	"Please help.\r\n"

func validate(token string) (string, bool) {
	switch token {
	case aliceToken:
		return alice, true
	case bobToken:
		return bob, true
	}
	return "", false
}

// newServer starts a fake Gmail with accounts alice and bob.
func newServer(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	if opts.Validate == nil {
		opts.Validate = validate
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv.AddUser(alice)
	srv.AddUser(bob)
	addr, err := srv.Start()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, addr.String()
}

func dial(t *testing.T, addr string, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// xoauth2Client is the client side of Google's XOAUTH2. On the error
// challenge it keeps the JSON and answers with the empty response Google
// asks for, so that the server can finish with a tagged NO.
type xoauth2Client struct {
	user, token string
	challenge   []byte
}

func (x *xoauth2Client) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}

func (x *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	x.challenge = challenge
	return []byte{}, nil
}

// oauthBearerClient wraps go-sasl's OAUTHBEARER client, which returns an
// error on the error challenge without answering it, leaving the server
// waiting; RFC 7628 section 3.2.3 wants %x01 instead.
type oauthBearerClient struct {
	sasl.Client
	challenge []byte
}

func (o *oauthBearerClient) Next(challenge []byte) ([]byte, error) {
	o.challenge = challenge
	return []byte{0x01}, nil
}

func login(t *testing.T, c *imapclient.Client, user, token string) {
	t.Helper()
	if err := c.Authenticate(&xoauth2Client{user: user, token: token}); err != nil {
		t.Fatalf("Authenticate(XOAUTH2 %s) = %v, want success", user, err)
	}
}

func selectInbox(t *testing.T, c *imapclient.Client) *imap.SelectData {
	t.Helper()
	data, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT INBOX: %v", err)
	}
	return data
}

func TestXOAUTH2Success(t *testing.T) {
	srv, addr := newServer(t, Options{})
	c := dial(t, addr, nil)
	if !c.Caps().Has("AUTH=XOAUTH2") || !c.Caps().Has("AUTH=OAUTHBEARER") {
		t.Fatalf("capabilities %v lack AUTH=XOAUTH2 / AUTH=OAUTHBEARER", c.Caps())
	}
	login(t, c, alice, aliceToken)
	if c.State() != imap.ConnStateAuthenticated {
		t.Fatalf("state after login = %v, want authenticated", c.State())
	}
	selectInbox(t, c)
	if got := srv.Logins(alice); got != 1 {
		t.Errorf("Logins(alice) = %d, want 1", got)
	}
	if got := srv.Logins(bob); got != 0 {
		t.Errorf("Logins(bob) = %d, want 0", got)
	}
	if got := srv.Connections(); got != 1 {
		t.Errorf("Connections() = %d, want 1", got)
	}
}

func TestXOAUTH2Rejected(t *testing.T) {
	tests := []struct {
		name, user, token string
	}{
		{"unknown token", alice, "ya29.expired"},
		{"token of another account", alice, bobToken},
		{"unknown account", "carol@example.com", aliceToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, addr := newServer(t, Options{})
			c := dial(t, addr, nil)
			sc := &xoauth2Client{user: tt.user, token: tt.token}
			err := c.Authenticate(sc)
			var imapErr *imap.Error
			if !errors.As(err, &imapErr) {
				t.Fatalf("Authenticate(%s) = %v, want *imap.Error", tt.name, err)
			}
			if imapErr.Type != imap.StatusResponseTypeNo ||
				imapErr.Code != imap.ResponseCodeAuthenticationFailed ||
				imapErr.Text != "Invalid credentials (Failure)" {
				t.Errorf("Authenticate(%s) = %q %q %q, want NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
					tt.name, imapErr.Type, imapErr.Code, imapErr.Text)
			}
			want := `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`
			if string(sc.challenge) != want {
				t.Errorf("error challenge = %q, want %q", sc.challenge, want)
			}
			if n := srv.Logins(alice); n != 0 {
				t.Errorf("Logins(alice) = %d, want 0", n)
			}
			// Gmail lets the client try again on the same connection.
			login(t, c, alice, aliceToken)
		})
	}
}

func TestOAUTHBEARER(t *testing.T) {
	srv, addr := newServer(t, Options{})
	c := dial(t, addr, nil)

	bad := &oauthBearerClient{Client: sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{
		Username: alice, Token: "ya29.revoked", Host: "imap.gmail.com", Port: 993,
	})}
	err := c.Authenticate(bad)
	var imapErr *imap.Error
	if !errors.As(err, &imapErr) || imapErr.Code != imap.ResponseCodeAuthenticationFailed {
		t.Fatalf("Authenticate(OAUTHBEARER bad token) = %v, want NO [AUTHENTICATIONFAILED]", err)
	}
	if !bytes.Contains(bad.challenge, []byte(`"status":"400"`)) {
		t.Errorf("OAUTHBEARER error challenge = %q, want Gmail's status 400 JSON", bad.challenge)
	}

	good := sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{
		Username: alice, Token: aliceToken, Host: "imap.gmail.com", Port: 993,
	})
	if err := c.Authenticate(good); err != nil {
		t.Fatalf("Authenticate(OAUTHBEARER) = %v, want success", err)
	}
	selectInbox(t, c)
	if got := srv.Logins(alice); got != 1 {
		t.Errorf("Logins(alice) = %d, want 1", got)
	}
}

func TestLoginRefused(t *testing.T) {
	_, addr := newServer(t, Options{})
	c := dial(t, addr, nil)
	if !c.Caps().Has(imap.CapLoginDisabled) {
		t.Errorf("capabilities %v lack LOGINDISABLED", c.Caps())
	}
	err := c.Login(alice, "app-password").Wait()
	var imapErr *imap.Error
	if !errors.As(err, &imapErr) || imapErr.Code != imap.ResponseCodeAuthenticationFailed {
		t.Fatalf("LOGIN = %v, want NO [AUTHENTICATIONFAILED]", err)
	}
}

func TestFailLoginInjected(t *testing.T) {
	srv, addr := newServer(t, Options{})
	tooMany := &imap.Error{
		Type: imap.StatusResponseTypeNo,
		Code: imap.ResponseCodeAlert,
		Text: "Too many simultaneous connections. (Failure)",
	}
	if err := srv.SetFailLogin(alice, tooMany); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, nil)
	sc := &xoauth2Client{user: alice, token: aliceToken}
	err := c.Authenticate(sc)
	var imapErr *imap.Error
	if !errors.As(err, &imapErr) || imapErr.Code != imap.ResponseCodeAlert || imapErr.Text != tooMany.Text {
		t.Fatalf("Authenticate with injected failure = %v, want %v", err, tooMany)
	}
	if sc.challenge != nil {
		t.Errorf("injected failure sent a challenge %q, want none", sc.challenge)
	}
	srv.SetFailLogin(alice, nil)
	login(t, c, alice, aliceToken)
}

func TestID(t *testing.T) {
	srv, addr := newServer(t, Options{})
	c := dial(t, addr, nil)
	if !c.Caps().Has(imap.CapID) {
		t.Errorf("capabilities %v lack ID", c.Caps())
	}
	server, err := c.ID(&imap.IDData{Name: "mailgate", Version: "0.1", Vendor: "mailgate"}).Wait()
	if err != nil {
		t.Fatalf("ID before login: %v", err)
	}
	if server.Name != "GImap" || server.Vendor != "Google, Inc." {
		t.Errorf("server ID = %+v, want GImap by Google, Inc.", server)
	}
	if got := srv.ClientID(alice); got != nil {
		t.Errorf("ClientID(alice) before login = %+v, want nil", got)
	}
	login(t, c, alice, aliceToken)
	got := srv.ClientID(alice)
	if got == nil || got.Name != "mailgate" || got.Version != "0.1" {
		t.Fatalf("ClientID(alice) = %+v, want name mailgate version 0.1", got)
	}

	// ID after login, and other commands still work around it.
	if _, err := c.ID(&imap.IDData{Name: "mailgate", Version: "0.2"}).Wait(); err != nil {
		t.Fatalf("ID after login: %v", err)
	}
	if got := srv.ClientID(alice); got == nil || got.Version != "0.2" {
		t.Errorf("ClientID(alice) after second ID = %+v, want version 0.2", got)
	}
	selectInbox(t, c)
}

// TestWire checks the raw lines a client sees, which is where Gmail's
// behaviour is specified.
func TestWire(t *testing.T) {
	_, addr := newServer(t, Options{})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	send := func(line string) {
		t.Helper()
		if _, err := conn.Write([]byte(line + "\r\n")); err != nil {
			t.Fatalf("send %q: %v", line, err)
		}
	}
	recv := func() string {
		t.Helper()
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v (partial %q)", err, line)
		}
		return strings.TrimRight(line, "\r\n")
	}
	expect := func(want string) {
		t.Helper()
		if got := recv(); got != want {
			t.Fatalf("got line %q, want %q", got, want)
		}
	}
	expectPrefix := func(prefix string) string {
		t.Helper()
		got := recv()
		if !strings.HasPrefix(got, prefix) {
			t.Fatalf("got line %q, want prefix %q", got, prefix)
		}
		return got
	}
	xoauth2 := func(user, token string) string {
		return base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
	}

	expectPrefix("* OK Gimap ready for requests from 127.0.0.1 ")

	send("a1 CAPABILITY")
	caps := strings.Fields(expectPrefix("* CAPABILITY "))
	for _, want := range []string{"IMAP4rev1", "SASL-IR", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER", "ID", "X-GM-EXT-1", "LOGINDISABLED"} {
		if !slices.Contains(caps, want) {
			t.Errorf("CAPABILITY %v lacks %s", caps, want)
		}
	}
	if slices.Contains(caps, "AUTH=PLAIN") {
		t.Errorf("CAPABILITY %v offers AUTH=PLAIN", caps)
	}
	expectPrefix("a1 OK")

	send(`a2 ID ("name" "mailgate" "os" NIL)`)
	expectPrefix(`* ID ("name" "GImap" "vendor" "Google, Inc."`)
	expectPrefix("a2 OK Success ")

	send("a3 AUTHENTICATE XOAUTH2 " + xoauth2(alice, "ya29.expired"))
	expect("+ " + gmailChallengeB64)
	send("")
	expect("a3 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)")

	send("a4 AUTHENTICATE XOAUTH2 " + base64.StdEncoding.EncodeToString([]byte("garbage")))
	expect("a4 BAD Invalid SASL argument.")

	send("a5 LOGIN alice@example.com secret")
	expect("a5 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)")

	// Without SASL-IR the server asks for the response with "+ ".
	send("a6 AUTHENTICATE XOAUTH2")
	expect("+ ")
	send(xoauth2(alice, aliceToken))
	ok := expectPrefix("a6 OK [CAPABILITY ")
	if !strings.HasSuffix(ok, "] alice@example.com authenticated (Success)") {
		t.Errorf("AUTHENTICATE OK = %q, want Gmail's text", ok)
	}
	if !strings.Contains(ok, " ID X-GM-EXT-1]") || strings.Contains(ok, "AUTH=") || strings.Contains(ok, "LOGINDISABLED") {
		t.Errorf("post-login capabilities %q: want ID and X-GM-EXT-1, no AUTH= or LOGINDISABLED", ok)
	}

	// A literal that looks like an ID command is message data, not a command.
	body := "x1 ID NIL\r\n"
	send("a7 APPEND INBOX {" + strconv.Itoa(len(body)) + "+}")
	send(body)
	expectPrefix("a7 OK")
	send("a8 LOGOUT")
	expectPrefix("* BYE")
}

func TestDeliverWakesIdle(t *testing.T) {
	srv, addr := newServer(t, Options{})
	exists := make(chan uint32, 16)
	c := dial(t, addr, &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(data *imapclient.UnilateralDataMailbox) {
				if data.NumMessages != nil {
					exists <- *data.NumMessages
				}
			},
		},
	})
	login(t, c, alice, aliceToken)
	selectInbox(t, c)
	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	for want := uint32(1); want <= 3; want++ {
		if _, err := srv.Deliver(alice, []byte(testMsg), false); err != nil {
			t.Fatalf("Deliver: %v", err)
		}
		select {
		case n := <-exists:
			if n != want {
				t.Fatalf("EXISTS %d, want %d", n, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no EXISTS %d within 5s of Deliver", want)
		}
	}
	// Delivery to another account must not reach this session.
	if _, err := srv.Deliver(bob, []byte(testMsg), false); err != nil {
		t.Fatal(err)
	}
	if err := idle.Close(); err != nil {
		t.Fatalf("IDLE close: %v", err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	select {
	case n := <-exists:
		t.Fatalf("unexpected EXISTS %d after bob's delivery", n)
	default:
	}
	if got := srv.Count(alice); got != 3 {
		t.Errorf("Count(alice) = %d, want 3", got)
	}
}

// lockedBuffer is a DebugWriter the client may write from two goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestIdleTimeout(t *testing.T) {
	_, addr := newServer(t, Options{IdleTimeout: 200 * time.Millisecond})
	var wire lockedBuffer
	c := dial(t, addr, &imapclient.Options{DebugWriter: &wire})
	login(t, c, alice, aliceToken)
	selectInbox(t, c)
	start := time.Now()
	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	select {
	case <-c.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open 5s into IDLE with IdleTimeout 200ms")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("connection closed after %v, before IdleTimeout", d)
	}
	if !strings.Contains(wire.String(), "* BYE "+idleByeText) {
		t.Errorf("client saw no BYE; wire:\n%s", wire.String())
	}
	idle.Close()
	if err := idle.Wait(); err == nil {
		t.Error("IDLE ended without error after the server cut it off")
	}
}

func TestIdleShorterThanTimeout(t *testing.T) {
	_, addr := newServer(t, Options{IdleTimeout: 300 * time.Millisecond})
	c := dial(t, addr, nil)
	login(t, c, alice, aliceToken)
	selectInbox(t, c)
	// A client that re-issues IDLE before the cut-off keeps its connection.
	for i := 0; i < 3; i++ {
		idle, err := c.Idle()
		if err != nil {
			t.Fatalf("IDLE %d: %v", i, err)
		}
		time.Sleep(150 * time.Millisecond)
		if err := idle.Close(); err != nil {
			t.Fatalf("IDLE %d close: %v", i, err)
		}
		if err := idle.Wait(); err != nil {
			t.Fatalf("IDLE %d: %v", i, err)
		}
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatalf("NOOP after repeated short IDLEs: %v", err)
	}
}

func TestPeekLeavesUnseenStoreSetsSeen(t *testing.T) {
	srv, addr := newServer(t, Options{})
	uid, err := srv.Deliver(alice, []byte(testMsg), false)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, nil)
	login(t, c, alice, aliceToken)
	selectInbox(t, c)

	section := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{
		UID:         true,
		Flags:       true,
		BodySection: []*imap.FetchItemBodySection{section},
	}).Collect()
	if err != nil {
		t.Fatalf("UID FETCH BODY.PEEK[]: %v", err)
	}
	if len(msgs) != 1 || msgs[0].UID != uid {
		t.Fatalf("UID FETCH %d returned %d messages", uid, len(msgs))
	}
	if got := string(msgs[0].FindBodySection(section)); got != testMsg {
		t.Errorf("BODY[] = %q, want %q", got, testMsg)
	}
	if srv.IsSeen(alice, uid) {
		t.Fatalf("IsSeen(%d) after BODY.PEEK[] = true, want false", uid)
	}

	store := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}
	if err := c.Store(imap.UIDSetNum(uid), store, nil).Close(); err != nil {
		t.Fatalf("UID STORE +FLAGS.SILENT (\\Seen): %v", err)
	}
	if !srv.IsSeen(alice, uid) {
		t.Errorf("IsSeen(%d) after STORE +FLAGS \\Seen = false, want true", uid)
	}
	if got := srv.Flags(alice, uid); !slices.Equal(got, []imap.Flag{imap.FlagSeen}) {
		t.Errorf("Flags(%d) = %v, want [\\Seen]", uid, got)
	}
	// Gmail writes system flags as \Seen; a client comparing with
	// imap.FlagSeen must see that spelling, not the backend's \seen.
	msgs, err = c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("UID FETCH FLAGS = %d messages, %v", len(msgs), err)
	}
	if !slices.Contains(msgs[0].Flags, imap.FlagSeen) {
		t.Errorf("FETCH FLAGS = %v, want %s", msgs[0].Flags, imap.FlagSeen)
	}
	if got := srv.Flags(alice, uid+100); got != nil {
		t.Errorf("Flags(missing uid) = %v, want nil", got)
	}
}

func TestSearchUnseen(t *testing.T) {
	srv, addr := newServer(t, Options{})
	var unseen []imap.UID
	for i, seen := range []bool{true, false, true, false} {
		uid, err := srv.Deliver(alice, []byte(testMsg), seen)
		if err != nil {
			t.Fatalf("Deliver %d: %v", i, err)
		}
		if !seen {
			unseen = append(unseen, uid)
		}
	}
	c := dial(t, addr, nil)
	login(t, c, alice, aliceToken)
	selectInbox(t, c)
	data, err := c.UIDSearch(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
	if err != nil {
		t.Fatalf("UID SEARCH UNSEEN: %v", err)
	}
	if got := data.AllUIDs(); !slices.Equal(got, unseen) {
		t.Errorf("UID SEARCH UNSEEN = %v, want %v", got, unseen)
	}
}

func TestFetchErrorInjected(t *testing.T) {
	srv, addr := newServer(t, Options{})
	uid, _ := srv.Deliver(alice, []byte(testMsg), false)
	c := dial(t, addr, nil)
	login(t, c, alice, aliceToken)
	selectInbox(t, c)
	srv.SetFetchError(alice, errors.New("Temporary System Error"))
	_, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{Flags: true}).Collect()
	var imapErr *imap.Error
	if !errors.As(err, &imapErr) || imapErr.Type != imap.StatusResponseTypeNo {
		t.Fatalf("FETCH with injected error = %v, want NO", err)
	}
	srv.SetFetchError(alice, nil)
	if _, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{Flags: true}).Collect(); err != nil {
		t.Fatalf("FETCH after clearing the error: %v", err)
	}
}

func TestUIDValidity(t *testing.T) {
	srv, addr := newServer(t, Options{})
	for i := 0; i < 2; i++ {
		if _, err := srv.Deliver(alice, []byte(testMsg), i == 0); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, addr, nil)
	login(t, c, alice, aliceToken)
	first := selectInbox(t, c).UIDValidity
	if first == 0 || first != srv.UIDValidity(alice) {
		t.Fatalf("SELECT UIDVALIDITY = %d, server says %d", first, srv.UIDValidity(alice))
	}

	// Stable across connections.
	c2 := dial(t, addr, nil)
	login(t, c2, alice, aliceToken)
	if again := selectInbox(t, c2).UIDValidity; again != first {
		t.Fatalf("UIDVALIDITY on second connection = %d, want %d", again, first)
	}

	newV, err := srv.ResetUIDValidity(alice)
	if err != nil {
		t.Fatalf("ResetUIDValidity: %v", err)
	}
	if newV == first {
		t.Fatalf("ResetUIDValidity kept UIDVALIDITY %d", first)
	}
	for i, cl := range []*imapclient.Client{c, c2} {
		select {
		case <-cl.Closed():
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d not dropped by ResetUIDValidity", i)
		}
	}

	c3 := dial(t, addr, nil)
	login(t, c3, alice, aliceToken)
	sel := selectInbox(t, c3)
	if sel.UIDValidity != newV {
		t.Errorf("UIDVALIDITY after reset = %d, want %d", sel.UIDValidity, newV)
	}
	if sel.NumMessages != 2 || srv.Count(alice) != 2 {
		t.Errorf("after reset: EXISTS %d, Count %d; want 2 messages kept", sel.NumMessages, srv.Count(alice))
	}
	if !srv.IsSeen(alice, 1) || srv.IsSeen(alice, 2) {
		t.Errorf("after reset: flags not kept (IsSeen(1)=%v IsSeen(2)=%v)", srv.IsSeen(alice, 1), srv.IsSeen(alice, 2))
	}
	if got := srv.UIDValidity(bob); got != first {
		t.Errorf("UIDValidity(bob) = %d, want %d (unchanged by alice's reset)", got, first)
	}
}

func TestUnknownAccount(t *testing.T) {
	srv, _ := newServer(t, Options{})
	if _, err := srv.Deliver("nobody@example.com", []byte(testMsg), false); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("Deliver(unknown) = %v, want ErrUnknownAccount", err)
	}
	if _, err := srv.ResetUIDValidity("nobody@example.com"); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("ResetUIDValidity(unknown) = %v, want ErrUnknownAccount", err)
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without Validate succeeded")
	}
}

func TestCanonicalFlags(t *testing.T) {
	tests := []struct{ in, want string }{
		{`* 1 FETCH (UID 1 FLAGS (\seen \flagged $junk))`, `* 1 FETCH (UID 1 FLAGS (\Seen \Flagged $junk))`},
		{`* FLAGS (\answered \deleted \draft \seen)`, `* FLAGS (\Answered \Deleted \Draft \Seen)`},
		{`* OK [PERMANENTFLAGS (\seen \*)] ok`, `* OK [PERMANENTFLAGS (\Seen \*)] ok`},
		{`* 1 FETCH (ENVELOPE (NIL "a \\seen b"))`, `* 1 FETCH (ENVELOPE (NIL "a \\seen b"))`},
		{`* 1 FETCH (FLAGS (\seenx))`, `* 1 FETCH (FLAGS (\seenx))`},
	}
	for _, tt := range tests {
		if got := canonicalFlags(tt.in); got != tt.want {
			t.Errorf("canonicalFlags(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestImplicitTLS(t *testing.T) {
	ca, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	_, addr := newServer(t, Options{TLS: ca.ServerTLS("imap.gmail.com")})
	c, err := imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: ca.ClientTLS("imap.gmail.com")})
	if err != nil {
		t.Fatalf("DialTLS: %v", err)
	}
	defer c.Close()
	login(t, c, alice, aliceToken)
	selectInbox(t, c)
}

// The Sent folder is marked \Sent in a plain LIST, as Gmail does, and in
// LIST RETURN (SPECIAL-USE), whatever its name.
func TestSentFolderSpecialUse(t *testing.T) {
	srv, addr := newServer(t, Options{})
	for _, name := range []string{SentMail, "[Gmail]/Gesendet"} {
		if name != SentMail {
			if err := srv.SetSentName(alice, name); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := srv.AppendSent(alice, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
		for _, opts := range []*imap.ListOptions{nil, {ReturnSpecialUse: true}} {
			c := dial(t, addr, nil)
			login(t, c, alice, aliceToken)
			list, err := c.List("", "*", opts).Collect()
			if err != nil {
				t.Fatal(err)
			}
			var sent []string
			for _, l := range list {
				if slices.Contains(l.Attrs, imap.MailboxAttrSent) {
					sent = append(sent, l.Mailbox)
				}
			}
			if len(sent) != 1 || sent[0] != name {
				t.Errorf("LIST %+v marks %v \\Sent, want only %q", opts, sent, name)
			}
			st, err := c.Status(name, &imap.StatusOptions{NumMessages: true}).Wait()
			if err != nil || *st.NumMessages == 0 {
				t.Errorf("STATUS %s = %+v, %v; want the appended mail", name, st, err)
			}
			c.Close()
		}
	}
}

// Two folders of one account may share a UIDVALIDITY on a real server; a
// test can make them.
func TestSetUIDValidity(t *testing.T) {
	srv, addr := newServer(t, Options{})
	c := dial(t, addr, nil)
	login(t, c, alice, aliceToken)
	inbox := selectInbox(t, c).UIDValidity
	sent, err := c.Select(SentMail, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sent.UIDValidity == inbox {
		t.Fatalf("INBOX and Sent share UIDVALIDITY %d already; the test shows nothing", inbox)
	}
	if err := srv.SetUIDValidity(alice, SentMail, inbox); err != nil {
		t.Fatal(err)
	}
	if err := srv.SetUIDValidity(alice, "No such folder", 7); err == nil {
		t.Error("SetUIDValidity of a missing mailbox succeeded")
	}
	sent, err = c.Select(SentMail, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(SentMail, &imap.StatusOptions{UIDValidity: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sent.UIDValidity != inbox || st.UIDValidity != inbox {
		t.Errorf("Sent UIDVALIDITY after SetUIDValidity: EXAMINE %d, STATUS %d; want INBOX's %d", sent.UIDValidity, st.UIDValidity, inbox)
	}
	if err := srv.SetUIDValidity(alice, Inbox, 4242); err != nil {
		t.Fatal(err)
	}
	if v := selectInbox(t, c).UIDValidity; v != 4242 || srv.UIDValidity(alice) != 4242 {
		t.Errorf("INBOX UIDVALIDITY = %d (SELECT), %d (UIDValidity); want 4242", v, srv.UIDValidity(alice))
	}
	// A reset gives INBOX a new one, as it would without the choice.
	newV, err := srv.ResetUIDValidity(alice)
	if err != nil {
		t.Fatal(err)
	}
	if newV == 4242 || srv.UIDValidity(alice) != newV {
		t.Errorf("after reset UIDValidity = %d, reset said %d; want a new one", srv.UIDValidity(alice), newV)
	}
}
