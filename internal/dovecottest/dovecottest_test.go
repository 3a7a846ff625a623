package dovecottest_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"golang.org/x/oauth2"

	"github.com/mailgate/mailgate/internal/dovecottest"
	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/oauth"
)

const (
	alice = "alice@example.test"
	bob   = "bob@example.test"
)

// start runs a fake Google and a Dovecot that checks tokens against it.
func start(t *testing.T) (*fakeoauth.Server, *dovecottest.Server) {
	t.Helper()
	oa := fakeoauth.New()
	t.Cleanup(oa.Close)
	began := time.Now()
	dv := dovecottest.Start(t, dovecottest.Options{
		Users:        []string{alice, bob},
		TokeninfoURL: oa.TokeninfoURL(),
	})
	t.Logf("Dovecot up on %s in %v", dv.Addr(), time.Since(began).Round(time.Millisecond))
	return oa, dv
}

func mail(n int) []byte {
	return fmt.Appendf(nil, "From: Customer %d <customer%d@example.org>\r\n"+
		"To: %s\r\n"+
		"Subject: Help %d\r\n"+
		"Message-ID: <m%d@example.org>\r\n"+
		"Date: Mon, 2 Jun 2025 10:00:00 +0000\r\n"+
		"\r\n"+
		"Body %d\r\n", n, n, alice, n, n, n)
}

func TestOAuthLogin(t *testing.T) {
	oa, dv := start(t)
	for _, tc := range []struct {
		name  string
		mechs []string // what the client is told the server offers
	}{
		{"XOAUTH2", []string{"XOAUTH2", "OAUTHBEARER"}},
		{"OAUTHBEARER", []string{"OAUTHBEARER"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dv.Dial(t, nil)
			for _, m := range tc.mechs {
				if !c.Caps().Has(imap.Cap("AUTH=" + m)) {
					t.Fatalf("Dovecot does not advertise AUTH=%s: %v", m, c.Caps())
				}
			}
			// Through a refresh token, the way imapfetch gets its tokens.
			tok, err := oa.Config("").TokenSource(t.Context(), &oauth2.Token{RefreshToken: oa.IssueRefreshToken(alice)}).Token()
			if err != nil {
				t.Fatal(err)
			}
			sc := oauth.Mechanism(tc.mechs, alice, tok.AccessToken)
			if err := oauth.Explain(sc, c.Authenticate(sc)); err != nil {
				t.Fatalf("Authenticate(%s, valid token) = %v, want success", tc.name, err)
			}
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatalf("SELECT INBOX after %s: %v", tc.name, err)
			}
		})
	}
}

// TestOAuthRejected records how Dovecot refuses a token, which differs
// from Gmail. Gmail (https://developers.google.com/gmail/imap/xoauth2-protocol)
// sends the challenge {"status":"400","schemes":"Bearer","scope":
// "https://mail.google.com/"} for both mechanisms, waits for an empty
// response line, then says "NO [AUTHENTICATIONFAILED] Invalid credentials
// (Failure)". Dovecot 2.3:
//
//   - XOAUTH2: challenge {"status":"401","schemes":"bearer","scope":"mail"}.
//     go-imap (v2.0.0-beta.8) encodes the client's empty response as "=",
//     RFC 4959's spelling for an empty *initial* response; Dovecot reads it
//     as invalid base64 and answers BAD "Invalid base64 data in continued
//     response" (RFC 3501 section 6.2.2: a response is a line of base64,
//     so an empty one is an empty line; Dovecot answers that with NO
//     [AUTHENTICATIONFAILED]). So the error is a BAD without a response
//     code; the connection stays open.
//   - OAUTHBEARER: challenge {"status":"invalid_token",...} as RFC 7628
//     section 3.2.2 has it; the client's %x01 is accepted and the answer
//     is NO [AUTHENTICATIONFAILED] "Authentication failed.", after which
//     the connection can try again.
//   - A valid token for an address with no mailbox passes the passdb and
//     fails the userdb: NO [UNAVAILABLE] "Internal error occurred", with no
//     challenge (a temporary failure in RFC 5530's terms), and Dovecot
//     hangs up.
func TestOAuthRejected(t *testing.T) {
	oa, dv := start(t)
	expired := oa.IssueAccessToken(alice)
	oa.ExpireAccessTokens()
	revokedRefresh := oa.IssueRefreshToken(alice)
	revoked, err := oa.Config("").TokenSource(t.Context(), &oauth2.Token{RefreshToken: revokedRefresh}).Token()
	if err != nil {
		t.Fatal(err)
	}
	oa.Revoke(revokedRefresh)

	for _, tc := range []struct {
		name, user, token string
	}{
		{"unknown token", alice, "ya29.not-a-token"},
		{"expired token", alice, expired},
		{"revoked token", alice, revoked.AccessToken},
		{"someone else's token", alice, oa.IssueAccessToken(bob)},
	} {
		for _, mech := range []string{"XOAUTH2", "OAUTHBEARER"} {
			t.Run(tc.name+"/"+mech, func(t *testing.T) {
				c := dv.Dial(t, nil)
				sc := oauth.Mechanism([]string{mech}, tc.user, tc.token)
				began := time.Now()
				err := oauth.Explain(sc, c.Authenticate(sc))
				took := time.Since(began)
				var imapErr *imap.Error
				var xe *oauth.XOAUTH2Error
				if !errors.As(err, &imapErr) || !errors.As(err, &xe) {
					t.Fatalf("Authenticate(%s) = %v, want an IMAP error explained by the server's challenge", tc.name, err)
				}
				t.Logf("Dovecot: challenge %+v, then %s [%s] %q in %v", *xe, imapErr.Type, imapErr.Code, imapErr.Text, took.Round(time.Millisecond))
				switch mech {
				case "XOAUTH2":
					if xe.Status != "401" || imapErr.Type != imap.StatusResponseTypeBad {
						t.Fatalf("Authenticate(%s) = %v, want challenge status 401 then BAD (see the comment above)", tc.name, err)
					}
				case "OAUTHBEARER":
					if xe.Status != "invalid_token" || imapErr.Type != imap.StatusResponseTypeNo || imapErr.Code != imap.ResponseCodeAuthenticationFailed {
						t.Fatalf("Authenticate(%s) = %v, want challenge invalid_token then NO [AUTHENTICATIONFAILED]", tc.name, err)
					}
				}
				// Either way the connection stays usable: a good token logs in.
				sc = oauth.Mechanism([]string{"OAUTHBEARER"}, alice, oa.IssueAccessToken(alice))
				if err := oauth.Explain(sc, c.Authenticate(sc)); err != nil {
					t.Fatalf("Authenticate(valid) after a failure = %v", err)
				}
			})
		}
	}

	t.Run("user without mailbox", func(t *testing.T) {
		const carol = "carol@example.test"
		c := dv.Dial(t, nil)
		sc := oauth.NewXOAUTH2Client(carol, oa.IssueAccessToken(carol))
		err := oauth.Explain(sc, c.Authenticate(sc))
		// Dovecot sends the NO and hangs up at once; go-imap sometimes
		// sees the hang-up first.
		var imapErr *imap.Error
		if errors.As(err, &imapErr) {
			if imapErr.Type != imap.StatusResponseTypeNo || imapErr.Code != imap.ResponseCodeUnavailable {
				t.Fatalf("Authenticate(valid token, no mailbox) = %v, want NO [UNAVAILABLE]", err)
			}
		} else if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Authenticate(valid token, no mailbox) = %v, want NO [UNAVAILABLE] or the connection closed", err)
		}
		select {
		case <-c.Closed():
		case <-time.After(5 * time.Second):
			t.Fatal("Dovecot kept the connection open after an internal login failure")
		}
	})
}

func TestPlainLogin(t *testing.T) {
	_, dv := start(t)
	dv.Login(t, alice)
	c := dv.Dial(t, nil)
	err := c.Login(alice, "wrong").Wait()
	var imapErr *imap.Error
	if !errors.As(err, &imapErr) || imapErr.Code != imap.ResponseCodeAuthenticationFailed {
		t.Fatalf("LOGIN with a wrong password = %v, want NO [AUTHENTICATIONFAILED]", err)
	}
	if _, err := dv.Deliver("carol@example.test", mail(1), false); err == nil {
		t.Fatalf("Deliver to a user that is not in Options.Users succeeded")
	}
}

// TestMailFlow is imapfetch's protocol sequence by hand: find UNSEEN, read
// with BODY.PEEK[] (which must not set \Seen), then STORE \Seen.
func TestMailFlow(t *testing.T) {
	oa, dv := start(t)
	raws := [][]byte{mail(1), mail(2), mail(3)}
	var uids []imap.UID
	for _, raw := range raws {
		uid, err := dv.Deliver(alice, raw, false)
		if err != nil {
			t.Fatal(err)
		}
		uids = append(uids, uid)
	}
	if _, err := dv.Deliver(alice, mail(4), true); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(uids, []imap.UID{1, 2, 3}) {
		t.Fatalf("APPENDUIDs = %v, want [1 2 3]", uids)
	}
	if n, err := dv.Count(alice); err != nil || n != 4 {
		t.Fatalf("Count = %d, %v; want 4", n, err)
	}
	if n, err := dv.Unseen(alice); err != nil || n != 3 {
		t.Fatalf("Unseen = %d, %v; want 3", n, err)
	}

	c := dv.Dial(t, nil)
	sc := oauth.NewXOAUTH2Client(alice, oa.IssueAccessToken(alice))
	if err := oauth.Explain(sc, c.Authenticate(sc)); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages != 4 || sel.UIDValidity == 0 || sel.UIDNext != 5 {
		t.Fatalf("SELECT = %d messages, UIDVALIDITY %d, UIDNEXT %d; want 4, nonzero, 5", sel.NumMessages, sel.UIDValidity, sel.UIDNext)
	}
	unseen := func() []imap.UID {
		t.Helper()
		data, err := c.UIDSearch(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
		if err != nil {
			t.Fatalf("UID SEARCH UNSEEN: %v", err)
		}
		return data.AllUIDs()
	}
	if got := unseen(); !slices.Equal(got, uids) {
		t.Fatalf("UID SEARCH UNSEEN = %v, want %v", got, uids)
	}

	peek := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{peek}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 {
		t.Fatalf("FETCH BODY.PEEK[] returned %d messages, want 3", len(msgs))
	}
	for i, m := range msgs {
		if got := m.FindBodySection(peek); !bytes.Equal(got, raws[i]) {
			t.Fatalf("BODY.PEEK[] of UID %d = %q, want %q", m.UID, got, raws[i])
		}
	}
	for n := 1; n <= 3; n++ {
		if seen, err := dv.IsSeen(alice, fmt.Sprintf("m%d@example.org", n)); err != nil || seen {
			t.Fatalf("IsSeen(m%d) after BODY.PEEK[] = %v, %v; want false", n, seen, err)
		}
	}

	if err := c.Store(imap.UIDSetNum(uids[0]), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
		t.Fatalf("UID STORE +FLAGS.SILENT (\\Seen): %v", err)
	}
	if seen, err := dv.IsSeen(alice, "<m1@example.org>"); err != nil || !seen {
		t.Fatalf("IsSeen(m1) after STORE = %v, %v; want true", seen, err)
	}
	if got := unseen(); !slices.Equal(got, uids[1:]) {
		t.Fatalf("UID SEARCH UNSEEN after STORE = %v, want %v", got, uids[1:])
	}
	want := map[imap.UID]bool{1: true, 2: false, 3: false, 4: true}
	if got, err := dv.Flags(alice); err != nil || !maps.Equal(got, want) {
		t.Fatalf("Flags = %v, %v; want %v", got, err, want)
	}

	// Without PEEK, reading sets \Seen (RFC 3501 section 6.4.5), which is
	// why imapfetch must never use it: the mail would look handled before
	// its ticket exists.
	body := &imap.FetchItemBodySection{}
	if _, err := c.Fetch(imap.UIDSetNum(uids[1]), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{body}}).Collect(); err != nil {
		t.Fatal(err)
	}
	if seen, err := dv.IsSeen(alice, "m2@example.org"); err != nil || !seen {
		t.Fatalf("IsSeen(m2) after FETCH BODY[] = %v, %v; want true", seen, err)
	}
	if _, err := dv.IsSeen(alice, "nonexistent@example.org"); err == nil {
		t.Fatal("IsSeen(nonexistent) succeeded, want an error")
	}
}

func TestIdleGetsExists(t *testing.T) {
	oa, dv := start(t)
	exists := make(chan uint32, 10)
	c := dv.Dial(t, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(data *imapclient.UnilateralDataMailbox) {
			if data.NumMessages != nil {
				exists <- *data.NumMessages
			}
		},
	}})
	sc := oauth.NewXOAUTH2Client(alice, oa.IssueAccessToken(alice))
	if err := oauth.Explain(sc, c.Authenticate(sc)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	for want := uint32(1); want <= 2; want++ {
		began := time.Now()
		if _, err := dv.Deliver(alice, mail(int(want)), false); err != nil {
			t.Fatal(err)
		}
		select {
		case n := <-exists:
			if n != want {
				t.Fatalf("IDLE: * %d EXISTS, want %d", n, want)
			}
			t.Logf("IDLE: * %d EXISTS %v after APPEND began", n, time.Since(began).Round(time.Millisecond))
		case <-time.After(10 * time.Second):
			t.Fatalf("IDLE: no EXISTS 10s after delivering mail %d", want)
		}
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("IDLE DONE: %v", err)
	}
}

func TestAddUserAndKick(t *testing.T) {
	_, dv := start(t)
	const carol = "carol@example.test"
	if _, err := dv.Deliver(carol, mail(1), false); err == nil {
		t.Fatal("Deliver to carol before AddUser succeeded")
	}
	if err := dv.AddUser(carol); err != nil {
		t.Fatal(err)
	}
	if err := dv.AddUser(carol); err != nil {
		t.Fatalf("AddUser again = %v, want nil", err)
	}
	if _, err := dv.Deliver(carol, mail(1), false); err != nil {
		t.Fatalf("Deliver to carol after AddUser: %v", err)
	}
	if n, err := dv.Count(carol); err != nil || n != 1 {
		t.Fatalf("Count(carol) = %d, %v; want 1", n, err)
	}

	c := dv.Login(t, carol)
	other := dv.Login(t, alice)
	if err := dv.Kick(carol); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("carol's connection still open 5s after Kick")
	}
	if err := other.Noop().Wait(); err != nil {
		t.Fatalf("alice's connection after kicking carol: %v", err)
	}
}
