// Package oauth gets OAuth2 access tokens for Gmail accounts and speaks the
// SASL mechanisms (XOAUTH2, OAUTHBEARER) that IMAP and SMTP use with them.
//
// One file per concern: xoauth2.go (SASL), token.go (refreshing access
// tokens), secret.go (refresh tokens encrypted at rest), consent.go (the
// interactive "accounts connect" flow). Nothing here logs or returns a token
// in an error string.
package oauth

// Google's production endpoints. Everything in this package takes them as
// parameters so tests and the demo can point at internal/fakeoauth instead.
const (
	GoogleAuthURL     = "https://accounts.google.com/o/oauth2/auth"
	GoogleTokenURL    = "https://oauth2.googleapis.com/token"
	GoogleUserinfoURL = "https://openidconnect.googleapis.com/v1/userinfo"

	// GmailScope is the only scope that allows IMAP and SMTP access
	// (https://developers.google.com/gmail/imap/xoauth2-protocol).
	GmailScope = "https://mail.google.com/"
)

// DefaultScopes returns the scopes mailgate asks for: Gmail, plus "openid
// email" so that the token response carries an id_token naming the account
// that was actually authorised (see Consent). A function, not a variable, so
// no caller can change it for everyone.
func DefaultScopes() []string {
	return []string{GmailScope, "openid", "email"}
}
