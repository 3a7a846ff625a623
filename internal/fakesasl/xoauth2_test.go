package fakesasl_test

import (
	"errors"
	"testing"

	"github.com/emersion/go-sasl"

	"github.com/mailgate/mailgate/internal/fakesasl"
	"github.com/mailgate/mailgate/oauth"
)

func TestParseXOAUTH2(t *testing.T) {
	_, ir, _ := oauth.NewXOAUTH2Client("alice@example.com", "ya29.a-b_c").Start()
	user, token, err := fakesasl.ParseXOAUTH2(ir)
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
		if u, tok, err := fakesasl.ParseXOAUTH2([]byte(bad)); err == nil {
			t.Errorf("ParseXOAUTH2(%q) = %q, %q, want error", bad, u, tok)
		}
	}
}

func TestXOAUTH2ErrorChallenge(t *testing.T) {
	got := string(fakesasl.ErrorChallenge("401", "https://mail.google.com/"))
	want := `{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}`
	if got != want {
		t.Fatalf("XOAUTH2ErrorChallenge = %s, want %s", got, want)
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
	if err := runSASL(t, oauth.NewXOAUTH2Client("alice@example.com", "good"), fakesasl.NewXOAUTH2Server(auth)); err != nil {
		t.Fatalf("good token: %v", err)
	}

	c := oauth.NewXOAUTH2Client("alice@example.com", "bad")
	err := runSASL(t, c, fakesasl.NewXOAUTH2Server(auth))
	var xe *oauth.XOAUTH2Error
	if !errors.As(err, &xe) || xe.Status != "401" {
		t.Fatalf("bad token: server error = %v, want XOAUTH2Error 401", err)
	}
	if c.LastError() == nil || c.LastError().Status != "401" {
		t.Fatalf("client LastError() = %v, want status 401", c.LastError())
	}
}

func TestXOAUTH2ServerAsksForInitialResponse(t *testing.T) {
	s := fakesasl.NewXOAUTH2Server(func(string, string) *oauth.XOAUTH2Error { return nil })
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

// FuzzParseXOAUTH2 checks that parsing never panics and that whatever the
// client can send, the server side reads back unchanged.
func FuzzParseXOAUTH2(f *testing.F) {
	f.Add("alice@example.com", "ya29.tok")
	f.Add("a=b@example.com", "tok with space")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, user, token string) {
		fakesasl.ParseXOAUTH2([]byte(user + token))
		_, ir, err := oauth.NewXOAUTH2Client(user, token).Start()
		if err != nil || user == "" || token == "" {
			return
		}
		u, tok, err := fakesasl.ParseXOAUTH2(ir)
		if err != nil || u != user || tok != token {
			t.Fatalf("ParseXOAUTH2(Start(%q, %q)) = %q, %q, %v", user, token, u, tok, err)
		}
	})
}

// TestGmailChallenge pins the bytes imap.gmail.com and smtp.gmail.com send
// for a refused token, which the fakes replay.
func TestGmailChallenge(t *testing.T) {
	want := `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`
	if got := string(fakesasl.GmailChallenge()); got != want {
		t.Fatalf("GmailChallenge = %s, want %s", got, want)
	}
}
