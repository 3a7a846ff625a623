// This file is the token endpoint, /token (code exchange and refresh
// grants), and revocation, /revoke: where tokens are made and killed.

package fakeoauth

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.tokenRequests++
	s.mu.Unlock()

	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "Bad Request")
		return
	}
	// RFC 6749 section 2.3.1: either HTTP Basic or form parameters.
	id, secret, basic := r.BasicAuth()
	if basic {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != ClientID || secret != ClientSecret {
		writeError(w, http.StatusUnauthorized, "invalid_client", "Unauthorized")
		return
	}

	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		s.exchangeCode(w, r.PostForm)
	case "refresh_token":
		s.refreshGrant(w, r.PostForm)
	default:
		writeError(w, http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: "+r.PostForm.Get("grant_type"))
	}
}

func (s *Server) exchangeCode(w http.ResponseWriter, form url.Values) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.codes[form.Get("code")]
	if c == nil || !s.now().Before(c.expiry) {
		writeError(w, http.StatusBadRequest, "invalid_grant", "Malformed auth code.")
		return
	}
	delete(s.codes, form.Get("code")) // single use, even when the rest fails
	if form.Get("redirect_uri") != c.redirectURI {
		writeError(w, http.StatusBadRequest, "redirect_uri_mismatch", "Bad Request")
		return
	}
	// RFC 7636 section 4.6.
	sum := sha256.Sum256([]byte(form.Get("code_verifier")))
	if base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
		writeError(w, http.StatusBadRequest, "invalid_grant", "Invalid code verifier.")
		return
	}

	resp := map[string]any{
		"token_type": "Bearer",
		"scope":      c.scope,
	}
	refresh := ""
	if c.issueRefresh && !s.omitRefresh {
		refresh = s.newRefreshLocked(c.email)
		resp["refresh_token"] = refresh
	}
	resp["access_token"] = s.newAccessLocked(c.email, refresh)
	resp["expires_in"] = int(s.lifetime / time.Second)
	if slices.Contains(strings.Fields(c.scope), "openid") {
		resp["id_token"] = s.idToken(c.email)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) refreshGrant(w http.ResponseWriter, form url.Values) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := form.Get("refresh_token")
	email, ok := s.refresh[old]
	s.grants = append(s.grants, RefreshGrant{RefreshToken: old, Refused: !ok})
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_grant", "Token has been expired or revoked.")
		return
	}
	resp := map[string]any{
		"token_type": "Bearer",
		"scope":      "https://mail.google.com/ openid email",
	}
	refresh := old
	if s.rotate {
		s.revokeLocked(old)
		refresh = s.newRefreshLocked(email)
		resp["refresh_token"] = refresh
	}
	resp["access_token"] = s.newAccessLocked(email, refresh)
	resp["expires_in"] = int(s.lifetime / time.Second)
	writeJSON(w, http.StatusOK, resp)
}

// handleRevoke imitates https://oauth2.googleapis.com/revoke: token= names
// a refresh or access token.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	tok := r.Form.Get("token")
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.refresh[tok]; ok {
		s.revokeLocked(tok)
	} else if a, ok := s.access[tok]; ok {
		// Revoking an access token revokes its grant.
		if a.refresh != "" {
			s.revokeLocked(a.refresh)
		}
		delete(s.access, tok)
	} else {
		writeError(w, http.StatusBadRequest, "invalid_token", "Token expired or revoked")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

func (s *Server) newRefreshLocked(email string) string {
	tok := "1//fake-" + random()
	s.refresh[tok] = email
	return tok
}

func (s *Server) newAccessLocked(email, refresh string) string {
	tok := "ya29.fake-" + random()
	s.access[tok] = &accessToken{email: email, refresh: refresh, expiry: s.now().Add(s.lifetime)}
	return tok
}

func (s *Server) revokeLocked(refresh string) {
	delete(s.refresh, refresh)
	for tok, a := range s.access {
		if a.refresh == refresh {
			delete(s.access, tok)
		}
	}
}

// idToken returns an unsigned JWT (RFC 7519 section 6) carrying email.
func (s *Server) idToken(email string) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	now := s.now()
	return enc(map[string]string{"alg": "none", "typ": "JWT"}) + "." + enc(map[string]any{
		"iss":            s.URL,
		"aud":            ClientID,
		"sub":            "fake-" + hex.EncodeToString([]byte(email)),
		"email":          email,
		"email_verified": true,
		"iat":            now.Unix(),
		"exp":            now.Add(time.Hour).Unix(),
	}) + "."
}
