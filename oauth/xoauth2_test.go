package oauth_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/emersion/go-sasl"

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
	resp, err := c.Next(oauth.XOAUTH2ErrorChallenge("401", "https://mail.google.com/"))
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

func TestParseXOAUTH2(t *testing.T) {
	_, ir, _ := oauth.NewXOAUTH2Client("alice@example.com", "ya29.a-b_c").Start()
	user, token, err := oauth.ParseXOAUTH2(ir)
	if err != nil || user != "alice@example.com" || token != "ya29.a-b_c" {
		t.Fatalf("ParseXOAUTH2(Start()) = %q, %q, %v", user, token, err)
	}

	for _, bad := range []string{
		"",
		"user=a@b\x01auth=Bearer t",                // no ^A^A
		"user=a@b\x01\x01",                         // no auth
		"auth=Bearer t\x01\x01",                    // no user
		"user=a@b\x01auth=Basic t\x01\x01",         // not Bearer
		"user=a@b\x01auth=Bearer \x01\x01",         // empty token
		"user=a@b\x01auth=Bearer t\x01x=y\x01\x01", // unknown field
		"user=a@b\x01authBearer t\x01\x01",         // no '='
	} {
		if u, tok, err := oauth.ParseXOAUTH2([]byte(bad)); err == nil {
			t.Errorf("ParseXOAUTH2(%q) = %q, %q, want error", bad, u, tok)
		}
	}
}

func TestXOAUTH2ErrorChallenge(t *testing.T) {
	got := string(oauth.XOAUTH2ErrorChallenge("401", "https://mail.google.com/"))
	want := `{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}`
	if got != want {
		t.Fatalf("XOAUTH2ErrorChallenge = %s, want %s", got, want)
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

// runSASL drives a client and a server the way go-smtp's server and client
// do, without the wire.
func runSASL(t *testing.T, c sasl.Client, s sasl.Server) error {
	t.Helper()
	_, resp, err := c.Start()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		challenge, done, err := s.Next(resp)
		if err != nil || done {
			return err
		}
		if resp, err = c.Next(challenge); err != nil {
			t.Fatalf("client Next(%q) error = %v", challenge, err)
		}
		if resp == nil {
			t.Fatal("client answered nil, which go-smtp would take for success")
		}
	}
	t.Fatal("SASL exchange did not end")
	return nil
}

func TestXOAUTH2ServerAcceptsAndRejects(t *testing.T) {
	auth := func(user, token string) *oauth.XOAUTH2Error {
		if user == "alice@example.com" && token == "good" {
			return nil
		}
		return &oauth.XOAUTH2Error{Status: "401", Schemes: "Bearer", Scope: oauth.GmailScope}
	}
	if err := runSASL(t, oauth.NewXOAUTH2Client("alice@example.com", "good"), oauth.NewXOAUTH2Server(auth)); err != nil {
		t.Fatalf("good token: %v", err)
	}

	c := oauth.NewXOAUTH2Client("alice@example.com", "bad")
	err := runSASL(t, c, oauth.NewXOAUTH2Server(auth))
	var xe *oauth.XOAUTH2Error
	if !errors.As(err, &xe) || xe.Status != "401" {
		t.Fatalf("bad token: server error = %v, want XOAUTH2Error 401", err)
	}
	if c.LastError() == nil || c.LastError().Status != "401" {
		t.Fatalf("client LastError() = %v, want status 401", c.LastError())
	}
}

func TestXOAUTH2ServerAsksForInitialResponse(t *testing.T) {
	s := oauth.NewXOAUTH2Server(func(string, string) *oauth.XOAUTH2Error { return nil })
	challenge, done, err := s.Next(nil)
	// nil, not empty: go-imap's server encodes an empty challenge as "+ =",
	// which clients treat as a challenge rather than a request for the IR.
	if challenge != nil || done || err != nil {
		t.Fatalf("Next(nil) = %#v, %v, %v, want nil, false, nil", challenge, done, err)
	}
	_, ir, _ := oauth.NewXOAUTH2Client("a@b.c", "t").Start()
	if _, done, err := s.Next(ir); !done || err != nil {
		t.Fatalf("Next(ir) = %v, %v, want done", done, err)
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
	c.Next(oauth.XOAUTH2ErrorChallenge("401", oauth.GmailScope))
	got := oauth.Explain(c, base)
	var xe *oauth.XOAUTH2Error
	if !errors.Is(got, base) || !errors.As(got, &xe) {
		t.Fatalf("Explain = %v, want it to wrap both errors", got)
	}
}

// FuzzParseXOAUTH2 checks that parsing never panics and that whatever the
// client can send, the server side reads back unchanged.
func FuzzParseXOAUTH2(f *testing.F) {
	f.Add("alice@example.com", "ya29.tok")
	f.Add("a=b@example.com", "tok with space")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, user, token string) {
		oauth.ParseXOAUTH2([]byte(user + token))
		_, ir, err := oauth.NewXOAUTH2Client(user, token).Start()
		if err != nil || user == "" || token == "" {
			return
		}
		u, tok, err := oauth.ParseXOAUTH2(ir)
		if err != nil || u != user || tok != token {
			t.Fatalf("ParseXOAUTH2(Start(%q, %q)) = %q, %q, %v", user, token, u, tok, err)
		}
	})
}
