package accounts

import (
	"context"
	"errors"
	"fmt"

	"github.com/mailgate/mailgate/oauth"
)

// MarkNeedsReconnect puts the account in error with the one warning an
// admin sees in `accounts list` when its token no longer works: Google
// refused the grant (invalid_grant: access removed, password changed, the
// 7-day expiry of an app in testing), or the stored refresh token does not
// decrypt. It says what stopped and the command that fixes it. Both
// directions reach it through one oauth.Registry, which calls it once per
// dead token. An account an admin disconnected meanwhile is left alone.
func (s *Store) MarkNeedsReconnect(ctx context.Context, email string, cause error) error {
	err := s.SetError(ctx, email, reconnectWarning(email, cause), cause)
	if errors.Is(err, ErrDisconnected) {
		return nil
	}
	return err
}

func reconnectWarning(email string, cause error) string {
	why := "Google revoked mailgate's access (invalid_grant)"
	if errors.Is(cause, oauth.ErrOpen) {
		why = "mailgate cannot decrypt the stored refresh token (was secrets.key_file replaced?)"
	}
	return fmt.Sprintf("%s: mail is no longer fetched and notifications no longer go out via Gmail (they take the account's fallback) until you run `mailgate accounts reconnect %s`", why, email)
}
