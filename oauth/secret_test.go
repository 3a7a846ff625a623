package oauth_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/oauth"
)

func newBox(t *testing.T) (*oauth.Box, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "token.key")
	b, err := oauth.LoadOrCreateKey(path)
	if err != nil {
		t.Fatalf("LoadOrCreateKey(%s) = %v", path, err)
	}
	return b, path
}

func TestBoxRoundTrip(t *testing.T) {
	b, _ := newBox(t)
	secret := []byte("1//0gFake-refresh-token")
	sealed := b.Seal(secret, []byte("alice@example.com"))
	if bytes.Contains(sealed, secret) {
		t.Fatal("sealed output contains the plaintext")
	}
	if again := b.Seal(secret, []byte("alice@example.com")); bytes.Equal(again, sealed) {
		t.Fatal("two seals are identical; nonce not random")
	}
	got, err := b.Open(sealed, []byte("alice@example.com"))
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open(Seal(x)) = %q, %v, want %q", got, err, secret)
	}
}

func TestBoxOpenFailures(t *testing.T) {
	b, _ := newBox(t)
	other, _ := newBox(t)
	sealed := b.Seal([]byte("refresh"), []byte("alice@example.com"))
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1

	for _, tc := range []struct {
		name   string
		box    *oauth.Box
		sealed []byte
		ad     string
	}{
		{"other account", b, sealed, "bob@example.com"},
		{"other key", other, sealed, "alice@example.com"},
		{"tampered", b, tampered, "alice@example.com"},
		{"truncated", b, sealed[:10], "alice@example.com"},
		{"empty", b, nil, "alice@example.com"},
	} {
		if got, err := tc.box.Open(tc.sealed, []byte(tc.ad)); !errors.Is(err, oauth.ErrOpen) {
			t.Errorf("%s: Open = %q, %v, want ErrOpen", tc.name, got, err)
		}
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	b, path := newBox(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != oauth.KeySize {
		t.Fatalf("key file mode %v size %d, want 0600 and %d bytes", fi.Mode(), fi.Size(), oauth.KeySize)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("key directory holds %d entries, want only the key (temp file left behind?)", len(entries))
	}

	// Loading again uses the same key.
	again, err := oauth.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	sealed := b.Seal([]byte("refresh"), []byte("a@b.c"))
	if _, err := again.Open(sealed, []byte("a@b.c")); err != nil {
		t.Fatalf("reloaded key cannot open: %v", err)
	}
}

func TestLoadOrCreateKeyRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // beat the umask
			t.Fatal(err)
		}
		return p
	}
	key := bytes.Repeat([]byte{7}, oauth.KeySize)

	for _, tc := range []struct {
		name, path, want string
	}{
		{"world-readable", write("open.key", key, 0o644), "chmod 600"},
		{"group-writable", write("group.key", key, 0o620), "chmod 600"},
		{"short", write("short.key", key[:16], 0o600), "want exactly 32"},
		{"long", write("long.key", append(key, '\n'), 0o600), "want exactly 32"},
		{"directory", dir, "not a regular file"},
	} {
		_, err := oauth.LoadOrCreateKey(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: LoadOrCreateKey = %v, want error containing %q", tc.name, err, tc.want)
		}
	}

	if _, err := oauth.LoadOrCreateKey(write("good.key", key, 0o400)); err != nil {
		t.Errorf("read-only 0400 key refused: %v", err)
	}
}
