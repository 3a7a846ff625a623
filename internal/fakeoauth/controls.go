// This file holds the knobs a test turns on the fake (who is signed in,
// a denied consent, rotation, token lifetime, the clock) and what it reads
// back or does directly (requests seen, tokens issued, revoked, validated).

package fakeoauth

import (
	"net/url"
	"slices"
	"time"
)

// SetSignedIn sets the Google account the browser is signed in as; /auth
// approves as that account whatever login_hint says. Empty (the default)
// means "whatever login_hint says".
func (s *Server) SetSignedIn(email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signedIn = email
}

// SetDeny makes /auth answer as if the user clicked Cancel
// (error=access_denied).
func (s *Server) SetDeny(deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deny = deny
}

// SetRotate makes every refresh also return a new refresh token and kill the
// old one.
func (s *Server) SetRotate(rotate bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rotate = rotate
}

// SetOmitRefreshToken makes code exchanges return no refresh token even
// when one is due, as Google sometimes does when an earlier grant exists.
func (s *Server) SetOmitRefreshToken(omit bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.omitRefresh = omit
}

// SetTokenLifetime sets the lifetime of access tokens issued from now on.
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = d
}

// SetClock replaces time.Now for expiry decisions.
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// ExpireAccessTokens makes every access token issued so far expired.
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.access {
		a.expiry = time.Time{}
	}
}

// TokenRequests returns how many requests /token has received.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenRequests
}

// RefreshGrants returns the refresh token requests so far, oldest first.
func (s *Server) RefreshGrants() []RefreshGrant {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.grants)
}

// LastAuthRequest returns the query of the last /auth request, or nil.
func (s *Server) LastAuthRequest() url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastAuth == nil {
		return nil
	}
	return cloneValues(s.lastAuth)
}

// IssueRefreshToken returns a new live refresh token for email, as if the
// user had consented elsewhere (mailgate accounts add --refresh-token-file).
func (s *Server) IssueRefreshToken(email string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newRefreshLocked(email)
}

// IssueAccessToken returns a new access token for email, for tests of the
// fake IMAP/SMTP servers that need no refresh.
func (s *Server) IssueAccessToken(email string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newAccessLocked(email, "")
}

// Revoke kills a refresh token and the access tokens issued from it, as
// Google does.
func (s *Server) Revoke(refreshToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revokeLocked(refreshToken)
}

// RevokeAll kills every refresh and access token of email (the user removed
// mailgate at myaccount.google.com/permissions).
func (s *Server) RevokeAll(email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok, e := range s.refresh {
		if e == email {
			delete(s.refresh, tok)
		}
	}
	for tok, a := range s.access {
		if a.email == email {
			delete(s.access, tok)
		}
	}
	for c, ac := range s.codes {
		if ac.email == email {
			delete(s.codes, c)
		}
	}
}

// Validate reports which account accessToken belongs to; ok is false when it
// is unknown, revoked or expired.
func (s *Server) Validate(accessToken string) (email string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.access[accessToken]
	if a == nil || !s.now().Before(a.expiry) {
		return "", false
	}
	return a.email, true
}
