package oauth_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/emersion/go-sasl"

	"github.com/mailgate/mailgate/internal/fakesasl"
	"github.com/mailgate/mailgate/oauth"
)

func TestXOAUTH2ClientStart(t *testing.T) {
	c := oauth.NewXOAUTH2Client("alice@example.com", "ya29.tok")
	mech, ir, err := c.Start()
	if err != nil {
		t.Fatal(err)
	}
	want := "user=alice@example.com\x01auth=Bearer ya29.tok\x01\x01"
	if mech != "XOAUTH2" || string(ir) != want {
		t.Fatalf("Start() = %q, %q, want XOAUTH2, %q", mech, ir, want)
	}
	if c.LastError() != nil {
		t.Fatalf("LastError() before any challenge = %v, want nil", c.LastError())
	}
}

func TestXOAUTH2ClientRejectsControlA(t *testing.T) {
	for _, tc := range []struct{ user, token string }{
		{"alice@example.com\x01auth=Bearer x", "t"},
		{"alice@example.com", "t\x01user=bob"},
	} {
		if _, _, err := oauth.NewXOAUTH2Client(tc.user, tc.token).Start(); err == nil {
			t.Errorf("Start(%q, %q) succeeded, want error", tc.user, tc.token)
		}
	}
}

func TestXOAUTH2ClientErrorChallenge(t *testing.T) {
	c := oauth.NewXOAUTH2Client("alice@example.com", "ya29.tok")
	c.Start()
	resp, err := c.Next(fakesasl.ErrorChallenge("401", "https://mail.google.com/"))
	if err != nil {
		t.Fatalf("Next(error challenge) error = %v", err)
	}
	// Non-nil: go-smtp reads a nil response as success.
	if resp == nil || len(resp) != 0 {
		t.Fatalf("Next(error challenge) = %#v, want non-nil empty", resp)
	}
	want := oauth.XOAUTH2Error{Status: "401", Schemes: "Bearer", Scope: "https://mail.google.com/"}
	if got := c.LastError(); got == nil || *got != want {
		t.Fatalf("LastError() = %+v, want %+v", got, want)
	}
	if _, err := c.Next([]byte("again")); !errors.Is(err, sasl.ErrUnexpectedServerChallenge) {
		t.Fatalf("second Next error = %v, want ErrUnexpectedServerChallenge", err)
	}
}

func TestXOAUTH2ClientNonJSONChallenge(t *testing.T) {
	c := oauth.NewXOAUTH2Client("alice@example.com", "tok")
	resp, err := c.Next([]byte("not json"))
	if err != nil || resp == nil || len(resp) != 0 {
		t.Fatalf("Next(garbage) = %#v, %v, want empty response", resp, err)
	}
	if c.LastError() == nil {
		t.Fatal("LastError() = nil after a challenge, want non-nil")
	}
}

func TestMechanism(t *testing.T) {
	for _, tc := range []struct {
		server []string
		want   string
	}{
		{[]string{"LOGIN", "PLAIN", "XOAUTH2", "PLAIN-CLIENTTOKEN", "OAUTHBEARER", "XOAUTH"}, "XOAUTH2"}, // Gmail SMTP
		{[]string{"OAUTHBEARER", "XOAUTH2"}, "XOAUTH2"},
		{[]string{"PLAIN", "oauthbearer"}, "OAUTHBEARER"},
		{[]string{"xoauth2"}, "XOAUTH2"},
		{[]string{"PLAIN", "LOGIN"}, "XOAUTH2"},
		{nil, "XOAUTH2"},
	} {
		c := oauth.Mechanism(tc.server, "alice@example.com", "tok")
		mech, ir, err := c.Start()
		if err != nil || mech != tc.want {
			t.Errorf("Mechanism(%q).Start() = %q, %v, want %q", tc.server, mech, err, tc.want)
			continue
		}
		if !bytes.Contains(ir, []byte("auth=Bearer tok\x01\x01")) {
			t.Errorf("Mechanism(%q) initial response %q lacks the token", tc.server, ir)
		}
	}
}

func TestOAuthBearerAnswersErrorWithControlA(t *testing.T) {
	c := oauth.Mechanism([]string{"OAUTHBEARER"}, "alice@example.com", "bad")
	var got sasl.OAuthBearerOptions
	s := sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
		got = o
		return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer"}
	})
	_, ir, _ := c.Start()
	challenge, done, err := s.Next(ir)
	if done || err != nil {
		t.Fatalf("server Next(ir) = %v, %v", done, err)
	}
	resp, err := c.Next(challenge)
	if err != nil || !slices.Equal(resp, []byte{0x01}) {
		t.Fatalf("client Next(error) = %q, %v, want ^A (RFC 7628 section 3.2.3)", resp, err)
	}
	if _, done, err := s.Next(resp); !done || err == nil {
		t.Fatalf("server Next(^A) = %v, %v, want done with error", done, err)
	}
	if got.Username != "alice@example.com" || got.Token != "bad" {
		t.Fatalf("server saw %+v", got)
	}
	final := oauth.Explain(c, errors.New("NO"))
	var xe *oauth.XOAUTH2Error
	if !errors.As(final, &xe) || xe.Status != "invalid_token" {
		t.Fatalf("Explain = %v, want it to carry status invalid_token", final)
	}
}

func TestExplain(t *testing.T) {
	c := oauth.NewXOAUTH2Client("a@b.c", "t")
	base := errors.New("535 5.7.8 Username and Password not accepted")
	if got := oauth.Explain(c, base); got != base {
		t.Fatalf("Explain without challenge = %v, want the error unchanged", got)
	}
	if oauth.Explain(c, nil) != nil {
		t.Fatal("Explain(nil) != nil")
	}
	c.Next(fakesasl.ErrorChallenge("401", oauth.GmailScope))
	got := oauth.Explain(c, base)
	var xe *oauth.XOAUTH2Error
	if !errors.Is(got, base) || !errors.As(got, &xe) {
		t.Fatalf("Explain = %v, want it to wrap both errors", got)
	}
}
