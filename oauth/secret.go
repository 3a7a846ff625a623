package oauth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the length of the key file: raw bytes of an AES-256 key.
const KeySize = 32

// ErrOpen is returned by Box.Open for any ciphertext that does not
// authenticate: wrong key, wrong account (additional data), or corruption.
var ErrOpen = errors.New("oauth: cannot decrypt secret (wrong key, wrong account, or corrupted)")

// Box encrypts refresh tokens at rest with AES-256-GCM. It is safe for
// concurrent use.
type Box struct {
	aead cipher.AEAD
}

// LoadOrCreateKey reads the key file at path, or creates it with a fresh
// random key (mode 0600, parent directory 0700 if missing) when there is
// none. It refuses a key file that group or others can read or write, and
// one that is not exactly KeySize bytes: a key that leaked or got truncated
// must be noticed, not used.
func LoadOrCreateKey(path string) (*Box, error) {
	key, err := readKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createKey(path)
	}
	if err != nil {
		return nil, err
	}
	return NewBox(key)
}

// LoadKey reads the key file at path and never creates one; a missing
// file is an error that matches fs.ErrNotExist.
func LoadKey(path string) (*Box, error) {
	key, err := readKey(path)
	if err != nil {
		return nil, err
	}
	return NewBox(key)
}

// NewBox returns a Box using key, which must be KeySize bytes.
func NewBox(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("oauth: key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("oauth: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("oauth: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext and returns raw bytes: a random 12-byte nonce
// followed by the GCM ciphertext and tag. additionalData (the account's
// email address) is authenticated but not stored, so a ciphertext copied to
// another account does not open. Random nonces are safe here: a key seals a
// few tokens per account over its life, far from GCM's 2^32 limit.
func (b *Box) Seal(plaintext []byte, additionalData []byte) []byte {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand.Read never fails on supported platforms
	}
	return b.aead.Seal(nonce, nonce, plaintext, additionalData)
}

// Open reverses Seal; additionalData must be what Seal was given. Any failure
// is ErrOpen.
func (b *Box) Open(sealed []byte, additionalData []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n+b.aead.Overhead() {
		return nil, ErrOpen
	}
	plain, err := b.aead.Open(nil, sealed[:n], sealed[n:], additionalData)
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

func readKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // keep fs.ErrNotExist visible to the caller
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("oauth: key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("oauth: key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("oauth: key file %s has mode %#o, readable or writable by group/others; run chmod 600 %s", path, perm, path)
	}
	if fi.Size() != KeySize {
		return nil, fmt.Errorf("oauth: key file %s is %d bytes, want exactly %d raw bytes", path, fi.Size(), KeySize)
	}
	key := make([]byte, KeySize)
	if _, err := io.ReadFull(f, key); err != nil {
		return nil, fmt.Errorf("oauth: read key file %s: %w", path, err)
	}
	return key, nil
}

// createKey writes a new key atomically: temp file in the same directory,
// fsync, then link into place. Linking (not renaming) never replaces a key
// another process created meanwhile; in that case its key wins and is read.
func createKey(path string) ([]byte, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("oauth: create key directory: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("oauth: generate key: %w", err)
	}

	tmp, err := os.CreateTemp(dir, ".mailgate-key-*") // created with mode 0600
	if err != nil {
		return nil, fmt.Errorf("oauth: create key file: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("oauth: create key file: %w", err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("oauth: write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("oauth: sync key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("oauth: write key file: %w", err)
	}

	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKey(path)
		}
		// Some filesystems have no hard links; rename is still atomic.
		if err := os.Rename(tmpName, path); err != nil {
			return nil, fmt.Errorf("oauth: install key file: %w", err)
		}
	}
	// Make the new directory entry durable too.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return key, nil
}
