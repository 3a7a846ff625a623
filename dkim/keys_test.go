package dkim_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/dkim"
)

// testKey loads a committed test key. Git does not keep mode 0600, so it
// loads a copy made with that mode.
func testKey(t *testing.T, name string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := dkim.LoadKey(p)
	if err != nil {
		t.Fatalf("LoadKey(%s) = %v", name, err)
	}
	return k
}

func TestGenerateWriteLoad(t *testing.T) {
	for _, tc := range []struct {
		algo string
		bits int
	}{{"rsa", 0}, {"rsa", 1024}, {"ed25519", 0}} {
		k, err := dkim.Generate(tc.algo, tc.bits)
		if err != nil {
			t.Fatalf("Generate(%s, %d) = %v", tc.algo, tc.bits, err)
		}
		if got, _ := dkim.Algorithm(k); got != tc.algo {
			t.Errorf("Generate(%s) made a %s key", tc.algo, got)
		}
		if r, ok := k.(*rsa.PrivateKey); ok {
			want := tc.bits
			if want == 0 {
				want = dkim.DefaultRSABits
			}
			if r.N.BitLen() != want {
				t.Errorf("Generate(rsa, %d) = %d bits, want %d", tc.bits, r.N.BitLen(), want)
			}
		}
		p := filepath.Join(t.TempDir(), "k.pem")
		if err := dkim.WriteKey(p, k); err != nil {
			t.Fatalf("WriteKey = %v", err)
		}
		st, _ := os.Stat(p)
		if st.Mode().Perm() != 0o600 {
			t.Errorf("WriteKey mode = %#o, want 0600", st.Mode().Perm())
		}
		back, err := dkim.LoadKey(p)
		if err != nil {
			t.Fatalf("LoadKey = %v", err)
		}
		if !back.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
			t.Errorf("LoadKey(WriteKey(%s)) is another key", tc.algo)
		}
		if err := dkim.WriteKey(p, k); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("WriteKey over an existing file = %v, want already exists", err)
		}
		entries, _ := os.ReadDir(filepath.Dir(p))
		if len(entries) != 1 {
			t.Errorf("WriteKey left %d files, want only the key", len(entries))
		}
	}
}

func TestGenerateRefuses(t *testing.T) {
	for _, tc := range []struct {
		algo string
		bits int
		want string
	}{
		{"rsa", 512, "512 bits"},
		{"rsa", 8192, "8192 bits"},
		{"ed25519", 2048, "rsa only"},
		{"dsa", 0, `"dsa"`},
	} {
		if _, err := dkim.Generate(tc.algo, tc.bits); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Generate(%s, %d) = %v, want error with %q", tc.algo, tc.bits, err, tc.want)
		}
	}
}

func TestLoadKeyRefusesOpenModes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k.pem")
	if err := dkim.WriteKey(p, testKey(t, "ed25519.pem")); err != nil {
		t.Fatal(err)
	}
	for mode, want := range map[os.FileMode]string{
		0o644: "dkim key " + p + " is readable by others (mode 0644): chmod 600 it",
		0o640: "is readable by others (mode 0640)",
		0o620: "is writable by others (mode 0620)",
	} {
		os.Chmod(p, mode)
		if _, err := dkim.LoadKey(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadKey of mode %#o = %v, want %q", mode, err, want)
		}
	}
	os.Chmod(p, 0o400)
	if _, err := dkim.LoadKey(p); err != nil {
		t.Errorf("LoadKey of mode 0400 = %v", err)
	}
}

func TestLoadKeyErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "absent.pem"), "absent.pem"},
		{write("junk.pem", "not a key"), "junk.pem: no PEM block"},
		{write("cert.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), `cert.pem: PEM block "CERTIFICATE"`},
		{write("enc.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), "enc.pem: the key is encrypted"},
	} {
		if _, err := dkim.LoadKey(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadKey(%s) = %v, want %q", filepath.Base(tc.path), err, tc.want)
		}
	}
}

// Keys made by opendkim-genkey or openssl genrsa are PKCS#1; an admin
// moving from OpenDKIM keeps the key that DNS already publishes.
func TestLoadKeyPKCS1(t *testing.T) {
	rk := testKey(t, "rsa.pem").(*rsa.PrivateKey)
	p := filepath.Join(t.TempDir(), "opendkim.private")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})
	if err := os.WriteFile(p, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := dkim.LoadKey(p)
	if err != nil || !rk.Equal(k) {
		t.Errorf("LoadKey(PKCS#1) = %v, want the same key", err)
	}
}

func TestRecordValue(t *testing.T) {
	ed := testKey(t, "ed25519.pem")
	k := dkim.Key{Domain: "example.com", Selector: "ed1", Signer: ed}
	if got, want := k.RecordName(), "ed1._domainkey.example.com"; got != want {
		t.Errorf("RecordName = %q, want %q", got, want)
	}
	// RFC 8463 section 4.2: p= is the raw 32-byte key, not an SPKI.
	want := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(ed.Public().(ed25519.PublicKey))
	if got := k.RecordValue(); got != want {
		t.Errorf("RecordValue = %q, want %q", got, want)
	}
	rk := dkim.Key{Domain: "example.com", Selector: "rsa1", Signer: testKey(t, "rsa.pem")}
	v := rk.RecordValue()
	if !strings.HasPrefix(v, "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA") {
		t.Errorf("RSA RecordValue is not an SPKI of a 2048-bit key: %s", v)
	}
	parts := dkim.SplitTXT(v)
	if len(parts) != 2 || len(parts[0]) != 255 || strings.Join(parts, "") != v {
		t.Errorf("SplitTXT(%d bytes) = %d parts", len(v), len(parts))
	}
	if q := dkim.QuoteTXT(v); !strings.HasPrefix(q, `"v=DKIM1; k=rsa; p=`) || strings.Count(q, `" "`) != 1 {
		t.Errorf("QuoteTXT = %s", q)
	}
	if got := dkim.QuoteTXT(`a"b\c`); got != `"a\"b\\c"` {
		t.Errorf("QuoteTXT escapes = %s", got)
	}
}
