package fakegmail

import (
	"errors"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestConnectionLimit: like Gmail, the login beyond MaxConnections gets
// NO [ALERT] Too many simultaneous connections, and another account is
// not affected; once one connection logs out, a login works again.
func TestConnectionLimit(t *testing.T) {
	_, addr := newServer(t, Options{MaxConnections: 2})
	a1, a2 := dial(t, addr, nil), dial(t, addr, nil)
	login(t, a1, alice, aliceToken)
	login(t, a2, alice, aliceToken)
	a3 := dial(t, addr, nil)
	err := a3.Authenticate(&xoauth2Client{user: alice, token: aliceToken})
	var ie *imap.Error
	if !errors.As(err, &ie) || ie.Code != imap.ResponseCodeAlert || ie.Text != "Too many simultaneous connections. (Failure)" {
		t.Fatalf("third login = %v, want NO [ALERT] Too many simultaneous connections. (Failure)", err)
	}
	login(t, dial(t, addr, nil), bob, bobToken)
	if err := a1.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	a1.Close()
	login(t, a3, alice, aliceToken)
}

func TestDefaultConnectionLimitIsGmails(t *testing.T) {
	srv, _ := newServer(t, Options{})
	if got := srv.maxConnections(); got != 15 {
		t.Errorf("default limit = %d, want Gmail's 15", got)
	}
}

// TestCommandThrottled: SetCommandError answers commands with Gmail's
// throttling replies, word for word, until it is cleared.
func TestCommandThrottled(t *testing.T) {
	srv, addr := newServer(t, Options{})
	c := dial(t, addr, nil)
	login(t, c, alice, aliceToken)
	for _, want := range []*imap.Error{ErrThrottled, ErrBandwidth} {
		srv.SetCommandError(alice, want)
		_, err := c.Select("INBOX", nil).Wait()
		var ie *imap.Error
		if !errors.As(err, &ie) || ie.Type != imap.StatusResponseTypeNo || ie.Code != want.Code || ie.Text != want.Text {
			t.Errorf("SELECT while throttled = %v, want NO [%s] %s", err, want.Code, want.Text)
		}
		if err := c.Noop().Wait(); err != nil {
			t.Errorf("NOOP while throttled = %v, want OK", err)
		}
	}
	srv.SetCommandError(alice, nil)
	selectInbox(t, c)
}
