package fakesmtp

import (
	"testing"

	"github.com/mailgate/mailgate/oauth"
)

// TestGmailAuthThrottled: SetAuthError answers the account's AUTH with
// Gmail's 454 4.7.0 (too many logins) or 421 4.7.0 (try again later, and the
// connection closes); another account logs in as usual, and clearing it
// lets the account in again.
func TestGmailAuthThrottled(t *testing.T) {
	s, ca := newGmail(t, GmailOptions{})
	for _, inj := range []struct {
		name   string
		closes bool
	}{{"454", false}, {"421", true}} {
		err := ErrTooManyLogins
		if inj.closes {
			err = ErrTryAgainLater
		}
		s.SetAuthError(alice, err)
		c := dialStartTLS(t, s.Addr(), ca)
		wantSMTPError(t, "AUTH with "+inj.name, c.Auth(oauth.NewXOAUTH2Client(alice, aliceToken)), err)
		if nerr := c.Noop(); (nerr != nil) != inj.closes {
			t.Errorf("NOOP after the %s = %v; want the connection closed only after a 421", inj.name, nerr)
		}
	}
	authXOAUTH2(t, dialStartTLS(t, s.Addr(), ca), bob, bobToken)
	s.SetAuthError(alice, nil)
	authXOAUTH2(t, dialStartTLS(t, s.Addr(), ca), alice, aliceToken)
}
