package fakeoauth_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mailgate/mailgate/internal/fakeoauth"
)

// noRedirect stops at the /auth redirect so tests can read the code.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}}

const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" // RFC 7636 appendix B

func challenge(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// authorize runs /auth and returns the redirect it answered with.
func authorize(t *testing.T, s *fakeoauth.Server, params url.Values) *url.URL {
	t.Helper()
	q := url.Values{
		"client_id":             {fakeoauth.ClientID},
		"redirect_uri":          {"http://127.0.0.1:5555/callback"},
		"response_type":         {"code"},
		"scope":                 {"https://mail.google.com/ openid email"},
		"state":                 {"st"},
		"access_type":           {"offline"},
		"code_challenge":        {challenge(verifier)},
		"code_challenge_method": {"S256"},
	}
	for k, v := range params {
		q[k] = v
	}
	resp, err := noRedirect.Get(s.URL + "/auth?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("/auth status %d, want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// postToken posts form to /token with the right client credentials
// (as form parameters, as Google documents) unless form sets them.
func postToken(t *testing.T, s *fakeoauth.Server, form url.Values) (int, map[string]any) {
	t.Helper()
	if form.Get("client_id") == "" {
		form.Set("client_id", fakeoauth.ClientID)
		form.Set("client_secret", fakeoauth.ClientSecret)
	}
	resp, err := http.PostForm(s.URL+"/token", form)
	return jsonReply(t, resp, err)
}

// jsonReply takes an HTTP request's outcome and returns the answer's status
// and JSON body, failing t on any error.
func jsonReply(t *testing.T, resp *http.Response, err error) (int, map[string]any) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func newServer(t *testing.T) *fakeoauth.Server {
	s := fakeoauth.New()
	t.Cleanup(s.Close)
	return s
}

func TestCodeExchange(t *testing.T) {
	s := newServer(t)
	s.SetSignedIn("alice@example.com")
	loc := authorize(t, s, url.Values{"login_hint": {"bob@example.com"}})
	if loc.Host != "127.0.0.1:5555" || loc.Query().Get("state") != "st" || loc.Query().Get("code") == "" {
		t.Fatalf("redirect = %s", loc)
	}
	code := loc.Query().Get("code")
	exchange := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {"http://127.0.0.1:5555/callback"},
		"code_verifier": {verifier},
	}
	status, body := postToken(t, s, exchange)
	if status != 200 || body["refresh_token"] == nil || body["id_token"] == nil || body["expires_in"] != 3600.0 {
		t.Fatalf("exchange = %d %v", status, body)
	}
	if email, ok := s.Validate(body["access_token"].(string)); !ok || email != "alice@example.com" {
		t.Fatalf("Validate = %q, %v, want the signed-in account, not login_hint", email, ok)
	}
	parts := strings.Split(body["id_token"].(string), ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct{ Email string }
	json.Unmarshal(payload, &claims)
	if len(parts) != 3 || claims.Email != "alice@example.com" {
		t.Fatalf("id_token %v has email %q", parts, claims.Email)
	}

	// Codes are single use.
	if status, body := postToken(t, s, exchange); status != 400 || body["error"] != "invalid_grant" {
		t.Fatalf("reused code = %d %v, want 400 invalid_grant", status, body)
	}
}

func TestCodeExchangeChecks(t *testing.T) {
	s := newServer(t)
	s.SetSignedIn("alice@example.com")
	for _, tc := range []struct {
		name   string
		change url.Values
		status int
		err    string
	}{
		{"bad verifier", url.Values{"code_verifier": {"x" + verifier}}, 400, "invalid_grant"},
		{"no verifier", url.Values{"code_verifier": {""}}, 400, "invalid_grant"},
		{"other redirect", url.Values{"redirect_uri": {"http://127.0.0.1:6666/callback"}}, 400, "redirect_uri_mismatch"},
		{"bad secret", url.Values{"client_id": {fakeoauth.ClientID}, "client_secret": {"nope"}}, 401, "invalid_client"},
		{"unknown code", url.Values{"code": {"4/nope"}}, 400, "invalid_grant"},
	} {
		form := url.Values{
			"grant_type":    {"authorization_code"},
			"code":          {authorize(t, s, nil).Query().Get("code")},
			"redirect_uri":  {"http://127.0.0.1:5555/callback"},
			"code_verifier": {verifier},
		}
		for k, v := range tc.change {
			form[k] = v
		}
		if status, body := postToken(t, s, form); status != tc.status || body["error"] != tc.err {
			t.Errorf("%s: /token = %d %v, want %d %s", tc.name, status, body, tc.status, tc.err)
		}
	}
}

func TestAuthRejects(t *testing.T) {
	s := newServer(t)
	s.SetSignedIn("alice@example.com")
	base := url.Values{
		"client_id":             {fakeoauth.ClientID},
		"redirect_uri":          {"http://127.0.0.1:5555/callback"},
		"response_type":         {"code"},
		"code_challenge":        {challenge(verifier)},
		"code_challenge_method": {"S256"},
	}
	for _, tc := range []struct {
		name     string
		change   url.Values
		status   int
		redirErr string
	}{
		{"unknown client", url.Values{"client_id": {"evil"}}, 401, ""},
		{"non-loopback redirect", url.Values{"redirect_uri": {"http://evil.example/cb"}}, 400, ""},
		{"https redirect", url.Values{"redirect_uri": {"https://127.0.0.1/cb"}}, 400, ""},
		{"no PKCE", url.Values{"code_challenge": {""}}, 302, "invalid_request"},
		{"plain PKCE", url.Values{"code_challenge_method": {"plain"}}, 302, "invalid_request"},
	} {
		q := url.Values{}
		for k, v := range base {
			q[k] = v
		}
		for k, v := range tc.change {
			q[k] = v
		}
		resp, err := noRedirect.Get(s.URL + "/auth?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != tc.status || (tc.redirErr != "" && loc.Query().Get("error") != tc.redirErr) {
			t.Errorf("%s: /auth = %d %s, want %d %s", tc.name, resp.StatusCode, loc, tc.status, tc.redirErr)
		}
	}
}

func TestRefreshTokenOnlyOnFreshConsent(t *testing.T) {
	s := newServer(t)
	s.SetSignedIn("alice@example.com")
	get := func(params url.Values) bool {
		loc := authorize(t, s, params)
		_, body := postToken(t, s, url.Values{
			"grant_type":    {"authorization_code"},
			"code":          {loc.Query().Get("code")},
			"redirect_uri":  {"http://127.0.0.1:5555/callback"},
			"code_verifier": {verifier},
		})
		return body["refresh_token"] != nil
	}
	if get(url.Values{"access_type": {"online"}}) {
		t.Error("online access got a refresh token")
	}
	if !get(nil) {
		t.Error("first offline grant got no refresh token")
	}
	if get(nil) {
		t.Error("second offline grant without prompt=consent got a refresh token, unlike Google")
	}
	if !get(url.Values{"prompt": {"consent"}}) {
		t.Error("prompt=consent got no refresh token")
	}
}

func TestRefreshGrant(t *testing.T) {
	s := newServer(t)
	refresh := s.IssueRefreshToken("alice@example.com")
	status, body := postToken(t, s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}})
	if status != 200 || body["refresh_token"] != nil {
		t.Fatalf("refresh = %d %v, want 200 without a new refresh token", status, body)
	}
	access := body["access_token"].(string)

	s.SetRotate(true)
	_, body = postToken(t, s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}})
	rotated, _ := body["refresh_token"].(string)
	if rotated == "" || rotated == refresh {
		t.Fatalf("rotating refresh = %v, want a new refresh token", body)
	}
	if _, ok := s.Validate(access); ok {
		t.Error("access token of the rotated-out refresh token still valid")
	}

	// Google's exact answer for a dead refresh token.
	resp, err := http.PostForm(s.URL+"/token", url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {refresh},
		"client_id": {fakeoauth.ClientID}, "client_secret": {fakeoauth.ClientSecret},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `{"error":"invalid_grant","error_description":"Token has been expired or revoked."}`
	if resp.StatusCode != 400 || strings.TrimSpace(string(raw)) != want {
		t.Fatalf("dead refresh token = %d %s, want 400 %s", resp.StatusCode, raw, want)
	}
	if n := s.TokenRequests(); n != 3 {
		t.Fatalf("TokenRequests() = %d, want 3", n)
	}
}

func TestRevokeAndExpiry(t *testing.T) {
	s := newServer(t)
	var clock atomic.Int64 // seconds since 2025-01-01, moved by the test
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	s.SetClock(func() time.Time { return start.Add(time.Duration(clock.Load()) * time.Second) })
	s.SetTokenLifetime(time.Minute)

	ctx := t.Context()
	cfg := s.Config("")
	r1 := s.IssueRefreshToken("alice@example.com")
	r2 := s.IssueRefreshToken("alice@example.com")
	rb := s.IssueRefreshToken("bob@example.com")
	tok := func(r string) string {
		tk, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: r}).Token()
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		return tk.AccessToken
	}
	a1, a2, ab := tok(r1), tok(r2), tok(rb)

	s.Revoke(r1)
	if _, ok := s.Validate(a1); ok {
		t.Error("access token valid after its refresh token was revoked")
	}
	if _, ok := s.Validate(a2); !ok {
		t.Error("Revoke(r1) killed r2's access token")
	}
	s.RevokeAll("alice@example.com")
	if _, ok := s.Validate(a2); ok {
		t.Error("RevokeAll left an access token alive")
	}
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: r2}).Token(); err == nil {
		t.Error("RevokeAll left a refresh token alive")
	}
	if _, ok := s.Validate(ab); !ok {
		t.Error("RevokeAll(alice) killed bob's token")
	}

	clock.Add(59)
	if _, ok := s.Validate(ab); !ok {
		t.Error("token expired early")
	}
	s.ExpireAccessTokens()
	if _, ok := s.Validate(ab); ok {
		t.Error("token valid after ExpireAccessTokens")
	}
	fresh := tok(rb)
	clock.Add(60)
	if _, ok := s.Validate(fresh); ok {
		t.Error("token valid after its lifetime")
	}
	if _, ok := s.Validate("ya29.unknown"); ok {
		t.Error("unknown token valid")
	}
}

func TestUserinfoAndRevokeEndpoint(t *testing.T) {
	s := newServer(t)
	refresh := s.IssueRefreshToken("alice@example.com")
	tk, err := s.Config("").TokenSource(t.Context(), &oauth2.Token{RefreshToken: refresh}).Token()
	if err != nil {
		t.Fatal(err)
	}
	userinfo := func(token string) (int, map[string]any) {
		req, _ := http.NewRequest("GET", s.UserinfoURL(), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if status, body := userinfo(tk.AccessToken); status != 200 || body["email"] != "alice@example.com" || body["email_verified"] != true {
		t.Fatalf("userinfo = %d %v", status, body)
	}

	resp, err := http.PostForm(s.RevokeURL(), url.Values{"token": {refresh}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/revoke = %d", resp.StatusCode)
	}
	if status, _ := userinfo(tk.AccessToken); status != 401 {
		t.Fatalf("userinfo after revoke = %d, want 401", status)
	}
}

func TestNewOnListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := fakeoauth.NewOnListener(l)
	defer s.Close()
	if s.URL != "http://"+l.Addr().String() {
		t.Fatalf("URL = %s, want http://%s", s.URL, l.Addr())
	}
	tok := s.IssueAccessToken("alice@example.com")
	req, _ := http.NewRequest("GET", s.UserinfoURL(), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("userinfo on listener = %d", resp.StatusCode)
	}
}

func TestTokeninfo(t *testing.T) {
	s := newServer(t)
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s.SetClock(func() time.Time { return now })
	refresh := s.IssueRefreshToken("alice@example.com")
	tk, err := s.Config("").TokenSource(t.Context(), &oauth2.Token{RefreshToken: refresh}).Token()
	if err != nil {
		t.Fatal(err)
	}
	other := s.IssueAccessToken("bob@example.com")

	// tokeninfo fetches the endpoint the way Dovecot's oauth2 passdb does:
	// the token appended to TokeninfoURL, or (post) as a form field.
	tokeninfo := func(token string, post bool) (int, map[string]any) {
		t.Helper()
		if post {
			resp, err := http.PostForm(strings.TrimSuffix(s.TokeninfoURL(), "?access_token="), url.Values{"access_token": {token}})
			return jsonReply(t, resp, err)
		}
		resp, err := http.Get(s.TokeninfoURL() + url.QueryEscape(token))
		return jsonReply(t, resp, err)
	}

	for _, post := range []bool{false, true} {
		status, body := tokeninfo(tk.AccessToken, post)
		if status != 200 || body["email"] != "alice@example.com" || body["expires_in"] != "3600" ||
			body["exp"] != "1735790645" || body["aud"] != fakeoauth.ClientID {
			t.Fatalf("tokeninfo(valid, post=%v) = %d %v, want 200 with alice, expires_in 3600", post, status, body)
		}
	}
	if status, body := tokeninfo(other, false); status != 200 || body["email"] != "bob@example.com" {
		t.Fatalf("tokeninfo(IssueAccessToken) = %d %v, want bob", status, body)
	}

	now = now.Add(time.Hour - 300*time.Millisecond)
	if status, body := tokeninfo(tk.AccessToken, false); status != 200 || body["expires_in"] != "1" {
		t.Fatalf("tokeninfo(0.3s left) = %d %v, want expires_in 1, never 0", status, body)
	}

	invalid := func(name, token string) {
		t.Helper()
		status, body := tokeninfo(token, false)
		if status != 400 || body["error"] != "invalid_token" {
			t.Fatalf("tokeninfo(%s) = %d %v, want 400 invalid_token", name, status, body)
		}
	}
	invalid("unknown", "ya29.nonsense")
	invalid("empty", "")
	now = now.Add(time.Second)
	invalid("expired", tk.AccessToken)
	now = now.Add(-time.Hour)
	s.Revoke(refresh)
	invalid("revoked", tk.AccessToken)
}
