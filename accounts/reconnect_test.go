package accounts

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/oauth"
)

// The warning says why, what stopped and the exact command; an account
// disconnected meanwhile stays disconnected.
func TestMarkNeedsReconnect(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestStore(t, Options{Box: newBox(t)})
	for _, tc := range []struct {
		email, why string
		cause      error
	}{
		{"alice@example.com", "Google revoked mailgate's access (invalid_grant)", fmt.Errorf("refresh: %w", oauth.ErrInvalidGrant)},
		{"bob@example.com", "cannot decrypt the stored refresh token", fmt.Errorf("refresh token of bob: %w", oauth.ErrOpen)},
	} {
		mustConnect(t, s, Account{Email: tc.email}, "1//token")
		if err := s.MarkNeedsReconnect(ctx, tc.email, tc.cause); err != nil {
			t.Fatalf("MarkNeedsReconnect(%s) = %v", tc.email, err)
		}
		a := mustGet(t, s, tc.email)
		for _, want := range []string{tc.why, "mail is no longer fetched", "no longer go out via Gmail", "`mailgate accounts reconnect " + tc.email + "`"} {
			if !strings.Contains(a.Warning, want) {
				t.Errorf("%s: warning %q lacks %q", tc.email, a.Warning, want)
			}
		}
		if a.State != StateError || a.LastError != tc.cause.Error() {
			t.Errorf("%s: state %s, last error %q; want error, %q", tc.email, a.State, a.LastError, tc.cause)
		}
	}

	mustConnect(t, s, Account{Email: "carol@example.com"}, "1//token")
	if err := s.Disconnect(ctx, "carol@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkNeedsReconnect(ctx, "carol@example.com", oauth.ErrInvalidGrant); err != nil {
		t.Errorf("MarkNeedsReconnect(disconnected) = %v, want nil", err)
	}
	if a := mustGet(t, s, "carol@example.com"); a.State != StateDisconnected {
		t.Errorf("a disconnected account became %s", a.State)
	}
}
