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
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
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
