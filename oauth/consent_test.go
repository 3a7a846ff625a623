package oauth_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/oauth"
)

// browser returns an OpenURL that does what a browser would: GET the
// consent URL and follow the redirect to the loopback listener. It records
// the final page.
func browser(t *testing.T, page *string) func(string) {
	return func(u string) {
		resp, err := http.Get(u)
		if err != nil {
			t.Errorf("browser GET: %v", err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if page != nil {
			*page = string(b)
		}
	}
}

func consentCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConsentFlow(t *testing.T) {
	f := newFake(t, nil)
	f.SetSignedIn("alice@example.com")
	cfg := f.Config("")
	var page string
	res, err := oauth.Consent(consentCtx(t), cfg, oauth.ConsentOptions{
		Email:   "alice@example.com",
		OpenURL: browser(t, &page),
	})
	if err != nil {
		t.Fatalf("Consent() = %v", err)
	}
	if res.Email != "alice@example.com" {
		t.Errorf("Consent().Email = %q, want alice@example.com", res.Email)
	}
	if email, ok := f.Validate(res.Token.AccessToken); !ok || email != "alice@example.com" {
		t.Errorf("access token validates as %q, %v", email, ok)
	}
	// The refresh token works.
	if _, err := oauth.NewSource(cfg, res.Token.RefreshToken, nil).Token(t.Context()); err != nil {
		t.Errorf("refresh token from consent: %v", err)
	}
	if !strings.Contains(page, "You can close this window") {
		t.Errorf("callback page = %q", page)
	}
	if cfg.RedirectURL != "" {
		t.Errorf("Consent modified the caller's config: RedirectURL = %q", cfg.RedirectURL)
	}

	q := f.LastAuthRequest()
	for k, want := range map[string]string{
		"access_type":           "offline",
		"prompt":                "consent",
		"login_hint":            "alice@example.com",
		"code_challenge_method": "S256",
		"response_type":         "code",
		"client_id":             fakeoauth.ClientID,
	} {
		if got := q.Get(k); got != want {
			t.Errorf("auth request %s = %q, want %q", k, got, want)
		}
	}
	redirect, _ := url.Parse(q.Get("redirect_uri"))
	if redirect == nil || redirect.Hostname() != "127.0.0.1" || redirect.Port() == "" || redirect.Path != "/callback" {
		t.Errorf("redirect_uri = %q, want http://127.0.0.1:PORT/callback", q.Get("redirect_uri"))
	}
	if len(q.Get("state")) < 20 {
		t.Errorf("state = %q, want a long random value", q.Get("state"))
	}
}

func TestConsentWrongAccount(t *testing.T) {
	f := newFake(t, nil)
	f.SetSignedIn("bob@example.com")
	res, err := oauth.Consent(consentCtx(t), f.Config(""), oauth.ConsentOptions{
		Email:   "alice@example.com",
		OpenURL: browser(t, nil),
	})
	if err != nil {
		t.Fatalf("Consent() = %v", err)
	}
	if res.Email != "bob@example.com" {
		t.Fatalf("Consent().Email = %q, want the account actually signed in, bob@example.com", res.Email)
	}
}

func TestConsentUserinfoFallback(t *testing.T) {
	f := newFake(t, nil)
	f.SetSignedIn("carol@example.com")
	cfg := f.Config("")
	cfg.Scopes = []string{oauth.GmailScope} // no openid: no id_token

	res, err := oauth.Consent(consentCtx(t), cfg, oauth.ConsentOptions{
		OpenURL:     browser(t, nil),
		UserinfoURL: f.UserinfoURL(),
	})
	if err != nil || res.Email != "carol@example.com" {
		t.Fatalf("Consent() via userinfo = %+v, %v, want carol@example.com", res, err)
	}

	if _, err := oauth.Consent(consentCtx(t), cfg, oauth.ConsentOptions{OpenURL: browser(t, nil)}); err == nil {
		t.Fatal("Consent() with neither id_token nor userinfo URL succeeded")
	}
}

func TestConsentFailures(t *testing.T) {
	t.Run("denied", func(t *testing.T) {
		f := newFake(t, nil)
		f.SetSignedIn("alice@example.com")
		f.SetDeny(true)
		_, err := oauth.Consent(consentCtx(t), f.Config(""), oauth.ConsentOptions{OpenURL: browser(t, nil)})
		if err == nil || !strings.Contains(err.Error(), "access_denied") {
			t.Fatalf("Consent() = %v, want access_denied", err)
		}
	})
	t.Run("no refresh token", func(t *testing.T) {
		f := newFake(t, nil)
		f.SetSignedIn("alice@example.com")
		f.SetOmitRefreshToken(true)
		_, err := oauth.Consent(consentCtx(t), f.Config(""), oauth.ConsentOptions{OpenURL: browser(t, nil)})
		if !errors.Is(err, oauth.ErrNoRefreshToken) || !strings.Contains(err.Error(), "myaccount.google.com/permissions") {
			t.Fatalf("Consent() = %v, want ErrNoRefreshToken", err)
		}
	})
	t.Run("wrong client secret", func(t *testing.T) {
		f := newFake(t, nil)
		f.SetSignedIn("alice@example.com")
		cfg := f.Config("")
		cfg.ClientSecret = "wrong"
		_, err := oauth.Consent(consentCtx(t), cfg, oauth.ConsentOptions{OpenURL: browser(t, nil)})
		if err == nil || !strings.Contains(err.Error(), "invalid_client") {
			t.Fatalf("Consent() = %v, want invalid_client", err)
		}
	})
	t.Run("no answer", func(t *testing.T) {
		f := newFake(t, nil)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := oauth.Consent(ctx, f.Config(""), oauth.ConsentOptions{OpenURL: func(string) {}})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Consent() = %v, want deadline exceeded", err)
		}
	})
}

func TestConsentIgnoresForeignState(t *testing.T) {
	f := newFake(t, nil)
	f.SetSignedIn("alice@example.com")
	open := func(u string) {
		// First a stray request with a wrong state, as from a stale tab.
		q, _ := url.Parse(u)
		redirect := q.Query().Get("redirect_uri")
		resp, err := http.Get(redirect + "?code=stolen&state=wrong")
		if err != nil {
			t.Errorf("stray GET: %v", err)
		} else {
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("stray callback status = %d, want 400", resp.StatusCode)
			}
		}
		browser(t, nil)(u)
	}
	res, err := oauth.Consent(consentCtx(t), f.Config(""), oauth.ConsentOptions{OpenURL: open})
	if err != nil || res.Email != "alice@example.com" {
		t.Fatalf("Consent() = %+v, %v, want success after ignoring the stray request", res, err)
	}
}

func TestEmail(t *testing.T) {
	f := newFake(t, nil)
	tok := f.IssueAccessToken("dave@example.com")
	got, err := oauth.Email(t.Context(), nil, f.UserinfoURL(), tok)
	if err != nil || got != "dave@example.com" {
		t.Fatalf("Email() = %q, %v", got, err)
	}
	_, err = oauth.Email(t.Context(), nil, f.UserinfoURL(), "ya29.unknown")
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "ya29.unknown") {
		t.Fatalf("Email(bad token) = %v, want a 401 error without the token", err)
	}
}
