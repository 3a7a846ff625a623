package dkim_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/dkim"
)

const notification = "From: Acme Support <support@example.com>\r\n" +
	"To: customer@example.net\r\n" +
	"Subject: [#42] Your printer is fixed\r\n" +
	"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n" +
	"Message-ID: <t42.c7@example.com>\r\n" +
	"In-Reply-To: <abc@example.net>\r\n" +
	"References: <abc@example.net>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"X-Mailer: helpdesk\r\n" +
	"\r\n" +
	"Hello,\r\n\r\nyour printer works again.  \r\n\r\n-- \r\nAcme\r\n"

// testKeys are the committed RSA and Ed25519 keys for example.com.
func testKeys(t *testing.T) (rsaKey, edKey dkim.Key) {
	t.Helper()
	return dkim.Key{Domain: "example.com", Selector: "rsa2026", Signer: testKey(t, "rsa.pem")},
		dkim.Key{Domain: "example.com", Selector: "ed2026", Signer: testKey(t, "ed25519.pem")}
}

// verify checks msg with go-msgauth's verifier, which finds the published
// keys by serving each key's RecordValue at its RecordName.
func verify(t *testing.T, msg []byte, keys ...dkim.Key) []*msgauth.Verification {
	t.Helper()
	dns := map[string]string{}
	for _, k := range keys {
		dns[k.RecordName()] = k.RecordValue()
	}
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if v, ok := dns[name]; ok {
				return []string{v}, nil
			}
			return nil, fmt.Errorf("no TXT at %s", name)
		},
	})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return vs
}

func sign(t *testing.T, msg string, keys ...dkim.Key) []byte {
	t.Helper()
	s, err := dkim.NewSigner(keys)
	if err != nil {
		t.Fatalf("NewSigner = %v", err)
	}
	out, err := s.Sign([]byte(msg))
	if err != nil {
		t.Fatalf("Sign = %v", err)
	}
	return out
}

func TestSignVerifies(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	for _, tc := range []struct {
		name string
		keys []dkim.Key
		algs []string
	}{
		{"rsa", []dkim.Key{rsaKey}, []string{"rsa-sha256"}},
		{"ed25519", []dkim.Key{edKey}, []string{"ed25519-sha256"}},
		{"dual", []dkim.Key{rsaKey, edKey}, []string{"rsa-sha256", "ed25519-sha256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signed := sign(t, notification, tc.keys...)
			if !bytes.HasSuffix(signed, []byte(notification)) {
				t.Fatalf("Sign changed the message instead of prepending:\n%s", signed)
			}
			head := string(signed[:len(signed)-len(notification)])
			for _, alg := range tc.algs {
				if !strings.Contains(head, "a="+alg+";") {
					t.Errorf("no %s signature in\n%s", alg, head)
				}
			}
			if !strings.Contains(head, "c=relaxed/relaxed;") {
				t.Errorf("canonicalization is not relaxed/relaxed:\n%s", head)
			}
			vs := verify(t, signed, tc.keys...)
			if len(vs) != len(tc.keys) {
				t.Fatalf("Verify found %d signatures, want %d", len(vs), len(tc.keys))
			}
			for _, v := range vs {
				if v.Err != nil {
					t.Errorf("signature by %s does not verify: %v", v.Domain, v.Err)
				}
				// From oversigned; absent Cc and Reply-To not listed.
				want := "From From To Subject Date Message-ID MIME-Version Content-Type In-Reply-To References"
				if got := strings.Join(v.HeaderKeys, " "); !strings.EqualFold(got, want) {
					t.Errorf("h= %s, want %s", got, want)
				}
			}
		})
	}
}

func TestRelaxedSurvivesWhitespace(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	signed := string(sign(t, notification, rsaKey, edKey))
	// What relays do: re-fold a header, change spacing, pad line ends.
	mangled := strings.NewReplacer(
		"Subject: [#42] Your printer is fixed\r\n", "Subject:   [#42] Your printer\r\n\tis   fixed \r\n",
		"To: customer@example.net\r\n", "To:customer@example.net\r\n",
		"your printer works again.  \r\n", "your printer works   again.\r\n",
	).Replace(signed)
	if mangled == signed {
		t.Fatal("the test did not change the message")
	}
	for _, v := range verify(t, []byte(mangled), rsaKey, edKey) {
		if v.Err != nil {
			t.Errorf("relaxed signature broke on whitespace changes: %v", v.Err)
		}
	}
	// A real change still breaks it.
	forged := strings.Replace(signed, "printer is fixed", "printer is broken", 1)
	for _, v := range verify(t, []byte(forged), rsaKey, edKey) {
		if v.Err == nil {
			t.Error("a changed Subject still verifies")
		}
	}
}

func TestOversignedFromBlocksAddedFrom(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	signed := string(sign(t, notification, rsaKey, edKey))
	hdrEnd := strings.Index(signed, "\r\n\r\n") + 2
	for name, forged := range map[string]string{
		"added after": signed[:hdrEnd] + "From: ceo@example.com\r\n" + signed[hdrEnd:],
		"added first": "From: ceo@example.com\r\n" + signed,
	} {
		for _, v := range verify(t, []byte(forged), rsaKey, edKey) {
			if v.Err == nil {
				t.Errorf("a second From %s signing still verifies", name)
			}
		}
	}
}

func TestSignLFAndCanSign(t *testing.T) {
	rsaKey, _ := testKeys(t)
	s, err := dkim.NewSigner([]dkim.Key{rsaKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"example.com", "EXAMPLE.com", "example.com."} {
		if !s.CanSign(d) {
			t.Errorf("CanSign(%q) = false", d)
		}
	}
	for _, d := range []string{"example.net", "sub.example.com", "gmail.com", ""} {
		if s.CanSign(d) {
			t.Errorf("CanSign(%q) = true", d)
		}
	}
	// A message with bare LF endings goes out in CRLF, signed as such.
	signed, err := s.Sign([]byte(strings.ReplaceAll(notification, "\r\n", "\n")))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(signed, []byte(notification)) {
		t.Errorf("LF message was not turned into CRLF:\n%q", signed)
	}
	for _, v := range verify(t, signed, rsaKey) {
		if v.Err != nil {
			t.Errorf("LF message signature: %v", v.Err)
		}
	}
}

func TestSignRefuses(t *testing.T) {
	rsaKey, _ := testKeys(t)
	s, _ := dkim.NewSigner([]dkim.Key{rsaKey})
	for _, tc := range []struct{ name, msg, want string }{
		{"other domain", strings.Replace(notification, "support@example.com", "someone@gmail.com", 1), "no key for From domain gmail.com"},
		{"no From", strings.Replace(notification, "From: Acme Support <support@example.com>\r\n", "", 1), "0 From fields"},
		{"two From", "From: a@example.com\r\n" + notification, "2 From fields"},
		{"mixed domains", strings.Replace(notification, "<support@example.com>", "<support@example.com>, b@example.org", 1), "example.com and example.org"},
	} {
		if _, err := s.Sign([]byte(tc.msg)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Sign(%s) = %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := dkim.NewSigner([]dkim.Key{rsaKey, rsaKey}); err == nil {
		t.Error("NewSigner accepted the same key twice")
	}
	if _, err := dkim.NewSigner([]dkim.Key{{Domain: "example.com", Signer: rsaKey.Signer}}); err == nil {
		t.Error("NewSigner accepted a key without a selector")
	}
}
