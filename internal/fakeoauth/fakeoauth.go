// Package fakeoauth is a fake of Google's OAuth2 endpoints (authorization,
// token, userinfo, tokeninfo, revoke) for tests and the demo. It issues opaque tokens
// that the fake Gmail IMAP and SMTP servers check with Server.Validate.
//
// Google is imitated where mailgate depends on it: refresh tokens only with
// access_type=offline (and only on a fresh consent, as with prompt=consent),
// PKCE S256, error bodies like {"error":"invalid_grant","error_description":
// "Token has been expired or revoked."}, and an id_token with an email claim
// when the scopes include "openid". The id_token is an unsigned JWT
// (alg "none"); clients take it straight from the token endpoint and do not
// check signatures.
package fakeoauth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// The only client the fake knows.
const (
	ClientID     = "mailgate-fake.apps.googleusercontent.com"
	ClientSecret = "fake-client-secret"
)

// DefaultTokenLifetime is Google's access token lifetime.
const DefaultTokenLifetime = time.Hour

// codeLifetime is how long an authorization code can be exchanged.
const codeLifetime = 10 * time.Minute

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL, e.g. http://127.0.0.1:PORT, without a slash.
	URL string
	ts  *httptest.Server

	mu            sync.Mutex
	now           func() time.Time
	signedIn      string
	deny          bool
	rotate        bool
	omitRefresh   bool
	lifetime      time.Duration
	codes         map[string]*authCode
	refresh       map[string]string // refresh token → email
	access        map[string]*accessToken
	tokenRequests int
	grants        []RefreshGrant
	lastAuth      url.Values
}

// RefreshGrant is one grant_type=refresh_token request the fake answered.
type RefreshGrant struct {
	RefreshToken string // as the client presented it
	Refused      bool   // answered invalid_grant
}

type authCode struct {
	email, redirectURI, challenge, scope string
	issueRefresh                         bool
	expiry                               time.Time
}

type accessToken struct {
	email   string
	refresh string // the refresh token it came from, "" if none
	expiry  time.Time
}

// New starts a fake on a free loopback port. Close it when done.
func New() *Server {
	s := newServer()
	s.ts = httptest.NewServer(s.Handler())
	s.URL = s.ts.URL
	return s
}

// NewOnListener starts a fake serving on l (the demo's fixed port).
func NewOnListener(l net.Listener) *Server {
	s := newServer()
	s.ts = httptest.NewUnstartedServer(s.Handler())
	s.ts.Listener.Close()
	s.ts.Listener = l
	s.ts.Start()
	s.URL = s.ts.URL
	return s
}

func newServer() *Server {
	return &Server{
		now:      time.Now,
		lifetime: DefaultTokenLifetime,
		codes:    make(map[string]*authCode),
		refresh:  make(map[string]string),
		access:   make(map[string]*accessToken),
	}
}

// Close stops the server.
func (s *Server) Close() {
	if s.ts != nil {
		s.ts.Close()
	}
}

// Handler returns the fake's endpoints: /auth, /token, /userinfo,
// /tokeninfo, /revoke.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /auth", s.handleAuth)
	mux.HandleFunc("POST /token", s.handleToken)
	mux.HandleFunc("GET /userinfo", s.handleUserinfo)
	mux.HandleFunc("GET /tokeninfo", s.handleTokeninfo)
	mux.HandleFunc("POST /tokeninfo", s.handleTokeninfo)
	mux.HandleFunc("POST /revoke", s.handleRevoke)
	return mux
}

// Config returns an oauth2.Config for this fake with the scopes mailgate
// uses (Gmail, openid, email) and the given redirect URL.
func (s *Server) Config(redirect string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     ClientID,
		ClientSecret: ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:  s.URL + "/auth",
			TokenURL: s.URL + "/token",
		},
		RedirectURL: redirect,
		Scopes:      []string{"https://mail.google.com/", "openid", "email"},
	}
}

// UserinfoURL returns the URL of the userinfo endpoint.
func (s *Server) UserinfoURL() string { return s.URL + "/userinfo" }

// TokeninfoURL returns the tokeninfo endpoint in the form Dovecot's oauth2
// passdb wants for tokeninfo_url: a prefix that the access token is
// appended to ("http://127.0.0.1:PORT/tokeninfo?access_token=").
func (s *Server) TokeninfoURL() string { return s.URL + "/tokeninfo?access_token=" }

// RevokeURL returns the URL of the revocation endpoint.
func (s *Server) RevokeURL() string { return s.URL + "/revoke" }

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

func writeError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func random() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}
