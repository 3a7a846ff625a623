package oauth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// ErrNoRefreshToken: Google sends a refresh token only when the user grants
// consent afresh; prompt=consent asks for that, but an earlier grant can still
// get in the way.
var ErrNoRefreshToken = errors.New("oauth: Google returned no refresh token: revoke mailgate's access at https://myaccount.google.com/permissions and connect again")

// ConsentOptions configures Consent.
type ConsentOptions struct {
	// Email is the account to connect, sent as login_hint. The user may
	// still pick another account; ConsentResult.Email says which one.
	Email string
	// OpenURL is called with the authorization URL, to print it and/or
	// open a browser. Required. It should return promptly.
	OpenURL func(url string)
	// UserinfoURL is asked for the account's address when the token
	// response has no id_token (scopes without "openid email"). Empty: no
	// fallback.
	UserinfoURL string
	// HTTPClient is used for the token and userinfo endpoints. Nil: the
	// client in ctx under oauth2.HTTPClient, else http.DefaultClient.
	HTTPClient *http.Client
	// ListenAddr is where the loopback redirect listener binds.
	// Default "127.0.0.1:0" (a free port).
	ListenAddr string
}

// ConsentResult is what an interactive consent produced.
type ConsentResult struct {
	// Email is the account the user actually authorised, which may
	// differ from ConsentOptions.Email; the caller decides what to do.
	Email string
	// Token holds the access token and the refresh token to store.
	Token *oauth2.Token
}

// Consent runs the OAuth2 authorization code flow for an installed app
// (RFC 8252): it listens on a loopback port, has the user open Google's
// consent page, waits for the redirect carrying the code, and exchanges it.
// PKCE (RFC 7636, S256) protects the code and a random state ties the
// redirect to this run. cfg is not modified. Consent waits until ctx is done,
// so give it a deadline.
func Consent(ctx context.Context, cfg *oauth2.Config, opts ConsentOptions) (*ConsentResult, error) {
	if opts.OpenURL == nil {
		return nil, errors.New("oauth: consent: OpenURL is required")
	}
	addr := opts.ListenAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("oauth: consent: listen for the redirect: %w", err)
	}

	// A copy rather than *cfg: the caller's config must not learn our port.
	c := &oauth2.Config{
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret,
		Endpoint:     cfg.Endpoint,
		Scopes:       cfg.Scopes,
		RedirectURL:  "http://" + l.Addr().String() + "/callback",
	}

	state := randomString()
	verifier := oauth2.GenerateVerifier()
	authOpts := []oauth2.AuthCodeOption{
		oauth2.AccessTypeOffline,                    // we need a refresh token
		oauth2.SetAuthURLParam("prompt", "consent"), // else Google omits it on reconnect
		oauth2.S256ChallengeOption(verifier),
	}
	if opts.Email != "" {
		authOpts = append(authOpts, oauth2.SetAuthURLParam("login_hint", opts.Email))
	}

	codes := make(chan callback, 1)
	srv := &http.Server{
		Handler:           callbackHandler(state, codes),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(l)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()

	opts.OpenURL(c.AuthCodeURL(state, authOpts...))

	var cb callback
	select {
	case cb = <-codes:
	case <-ctx.Done():
		return nil, fmt.Errorf("oauth: consent: no answer from the browser: %w", ctx.Err())
	}
	if cb.err != nil {
		return nil, cb.err
	}

	if opts.HTTPClient != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, opts.HTTPClient)
	}
	tok, err := c.Exchange(ctx, cb.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, tokenError("consent: exchange code", err)
	}
	if tok.RefreshToken == "" {
		return nil, ErrNoRefreshToken
	}

	email, err := idTokenEmail(tok)
	if err != nil {
		return nil, err
	}
	if email == "" {
		if opts.UserinfoURL == "" {
			return nil, errors.New("oauth: consent: token response has no id_token with an email and no userinfo URL is configured (add the scopes \"openid email\")")
		}
		hc := opts.HTTPClient
		if hc == nil {
			hc, _ = ctx.Value(oauth2.HTTPClient).(*http.Client)
		}
		if email, err = Email(ctx, hc, opts.UserinfoURL, tok.AccessToken); err != nil {
			return nil, fmt.Errorf("oauth: consent: %w", err)
		}
	}
	return &ConsentResult{Email: email, Token: tok}, nil
}

type callback struct {
	code string
	err  error
}

var callbackPage = template.Must(template.New("").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>mailgate</title></head>
<body><p>{{.}}</p><p>You can close this window and return to the terminal.</p></body></html>
`))

// callbackHandler serves the redirect_uri. The first request with the right
// state decides the outcome; requests with another state (a stale tab, a
// curious local process) get 400 and are otherwise ignored.
func callbackHandler(state string, out chan<- callback) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /callback", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
			http.Error(w, "mailgate: unexpected state parameter; start again from the terminal", http.StatusBadRequest)
			return
		}
		var cb callback
		msg := "mailgate received the authorisation."
		switch {
		case q.Get("error") != "":
			// RFC 6749 section 4.1.2.1: e.g. error=access_denied when the
			// user clicked Cancel.
			cb.err = fmt.Errorf("oauth: consent: authorization failed: %s", q.Get("error"))
			if d := q.Get("error_description"); d != "" {
				cb.err = fmt.Errorf("%w: %s", cb.err, d)
			}
			msg = "Authorisation failed: " + q.Get("error")
		case q.Get("code") == "":
			cb.err = errors.New("oauth: consent: redirect carried neither code nor error")
			msg = "Authorisation failed: no code."
		default:
			cb.code = q.Get("code")
		}
		select {
		case out <- cb:
		default: // a second good redirect (reload); the first one counts
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		callbackPage.Execute(w, msg)
	})
	return mux
}

// idTokenEmail returns the email claim of the id_token in tok, or "" if
// there is no id_token. The signature is not checked: the token came
// straight from the token endpoint over TLS in answer to our own code
// exchange, which authenticates it (OpenID Connect Core 1.0 section 3.1.3.7).
func idTokenEmail(tok *oauth2.Token) (string, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", nil
	}
	parts := strings.Split(raw, ".")
	if len(parts) < 2 {
		return "", errors.New("oauth: consent: malformed id_token")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", fmt.Errorf("oauth: consent: malformed id_token payload: %w", err)
	}
	var claims struct {
		Email string `json:"email"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", fmt.Errorf("oauth: consent: malformed id_token claims: %w", err)
	}
	return claims.Email, nil
}

// Email asks userinfoURL which account accessToken belongs to. It accepts
// OpenID Connect userinfo ({"email": ...}) and the Gmail API profile
// ({"emailAddress": ...}, which needs only the Gmail scope). A nil
// httpClient means http.DefaultClient.
func Email(ctx context.Context, httpClient *http.Client, userinfoURL, accessToken string) (string, error) {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, userinfoURL, nil)
	if err != nil {
		return "", fmt.Errorf("oauth: userinfo: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("oauth: userinfo: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("oauth: userinfo: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("oauth: userinfo %s returned %s", userinfoURL, resp.Status)
	}
	var info struct {
		Email        string `json:"email"`
		EmailAddress string `json:"emailAddress"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return "", fmt.Errorf("oauth: userinfo: %w", err)
	}
	if info.Email == "" {
		info.Email = info.EmailAddress
	}
	if info.Email == "" {
		return "", fmt.Errorf("oauth: userinfo %s returned no email", userinfoURL)
	}
	return info.Email, nil
}

// randomString returns 32 URL-safe random characters.
func randomString() string {
	b := make([]byte, 24)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}
