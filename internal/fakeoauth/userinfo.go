// This file holds the endpoints that say whom a token belongs to: /userinfo
// (what mailgate asks) and /tokeninfo (what Dovecot asks).

package fakeoauth

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"
)

func (s *Server) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	email, ok := "", false
	if strings.EqualFold(scheme, "Bearer") {
		email, ok = s.Validate(tok)
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "invalid_request", "Invalid Credentials")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"sub":            "fake-" + hex.EncodeToString([]byte(email)),
		"email":          email,
		"email_verified": true,
	})
}

// handleTokeninfo imitates https://oauth2.googleapis.com/tokeninfo, which
// a real IMAP server (Dovecot's oauth2 passdb, see internal/dovecottest)
// calls to check a bearer token: access_token in the query or form. Like
// Google's, the answer carries the account's email and the remaining
// lifetime, all values as JSON strings; an unknown, revoked or expired token
// gets 400 {"error":"invalid_token","error_description":"Invalid Value"}.
func (s *Server) handleTokeninfo(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	tok := r.Form.Get("access_token")
	s.mu.Lock()
	a := s.access[tok]
	now := s.now()
	valid := a != nil && now.Before(a.expiry)
	var email string
	var expiry time.Time
	if valid {
		email, expiry = a.email, a.expiry
	}
	s.mu.Unlock()
	if !valid {
		writeError(w, http.StatusBadRequest, "invalid_token", "Invalid Value")
		return
	}
	// Rounded down, but a token with less than a second left is still
	// valid: never report 0 for it.
	left := max(int64(expiry.Sub(now)/time.Second), 1)
	writeJSON(w, http.StatusOK, map[string]string{
		"azp":            ClientID,
		"aud":            ClientID,
		"sub":            "fake-" + hex.EncodeToString([]byte(email)),
		"scope":          "https://mail.google.com/ openid email",
		"exp":            strconv.FormatInt(expiry.Unix(), 10),
		"expires_in":     strconv.FormatInt(left, 10),
		"email":          email,
		"email_verified": "true",
		"access_type":    "offline",
	})
}
