// This file is the authorization endpoint, /auth: the consent screen that
// answers a loopback redirect with a code, or with an error.

package fakeoauth

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

func (s *Server) handleAuth(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	s.lastAuth = cloneValues(q)
	signedIn, deny := s.signedIn, s.deny
	s.mu.Unlock()

	// Before redirect_uri is known to be good, errors are shown to the
	// user, never redirected (RFC 6749 section 4.1.2.1).
	if q.Get("client_id") != ClientID {
		http.Error(w, "Error 401: invalid_client. The OAuth client was not found.", http.StatusUnauthorized)
		return
	}
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || !loopbackRedirect(redirect) {
		http.Error(w, "Error 400: redirect_uri_mismatch", http.StatusBadRequest)
		return
	}
	fail := func(code, desc string) {
		v := redirect.Query()
		v.Set("error", code)
		if desc != "" {
			v.Set("error_description", desc)
		}
		if st := q.Get("state"); st != "" {
			v.Set("state", st)
		}
		redirect.RawQuery = v.Encode()
		http.Redirect(w, r, redirect.String(), http.StatusFound)
	}
	switch {
	case q.Get("response_type") != "code":
		fail("unsupported_response_type", "")
		return
	case q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256":
		fail("invalid_request", "code_challenge with code_challenge_method=S256 is required")
		return
	case deny:
		fail("access_denied", "")
		return
	}
	email := signedIn
	if email == "" {
		email = q.Get("login_hint")
	}
	if email == "" {
		fail("access_denied", "no account signed in")
		return
	}

	s.mu.Lock()
	// Google sends a refresh token for offline access on a fresh consent;
	// prompt=consent forces one, otherwise only the first grant gets it.
	hasGrant := slices.Contains(slices.Collect(maps.Values(s.refresh)), email)
	prompt := strings.Fields(q.Get("prompt"))
	code := "4/fake-" + random()
	s.codes[code] = &authCode{
		email:        email,
		redirectURI:  q.Get("redirect_uri"),
		challenge:    q.Get("code_challenge"),
		scope:        q.Get("scope"),
		issueRefresh: q.Get("access_type") == "offline" && (slices.Contains(prompt, "consent") || !hasGrant),
		expiry:       s.now().Add(codeLifetime),
	}
	s.mu.Unlock()

	v := redirect.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	v.Set("scope", q.Get("scope"))
	redirect.RawQuery = v.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// loopbackRedirect accepts only http://127.0.0.1, [::1] or localhost with
// any port, the redirect URIs Google allows for desktop clients (RFC 8252
// section 7.3).
func loopbackRedirect(u *url.URL) bool {
	if u.Scheme != "http" || u.User != nil || u.Fragment != "" {
		return false
	}
	switch u.Hostname() {
	case "127.0.0.1", "::1", "localhost":
		return true
	}
	return false
}
