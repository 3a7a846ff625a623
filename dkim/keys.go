package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Key algorithms, as the k= tag of a DKIM record names them.
const (
	AlgoRSA     = "rsa"     // rsa-sha256, RFC 6376.
	AlgoEd25519 = "ed25519" // ed25519-sha256, RFC 8463.
)

// RSA key sizes. RFC 8301 section 3.2: signers MUST use at least 1024 bits
// and SHOULD use 2048; verifiers need only handle up to 4096, so a larger
// key would make some receivers fail the signature.
const (
	DefaultRSABits = 2048
	MinRSABits     = 1024
	MaxRSABits     = 4096
)

// Generate makes a new signing key: algo is "rsa" or "ed25519"; bits is the
// RSA modulus size (0 means DefaultRSABits) and must be 0 for ed25519.
func Generate(algo string, bits int) (crypto.Signer, error) {
	switch algo {
	case AlgoRSA:
		if bits == 0 {
			bits = DefaultRSABits
		}
		if bits < MinRSABits || bits > MaxRSABits {
			return nil, fmt.Errorf("dkim: rsa key of %d bits: want %d to %d (RFC 8301), %d recommended", bits, MinRSABits, MaxRSABits, DefaultRSABits)
		}
		return rsa.GenerateKey(rand.Reader, bits)
	case AlgoEd25519:
		if bits != 0 && bits != 256 {
			return nil, fmt.Errorf("dkim: ed25519 keys have a fixed size; bits (%d) applies to rsa only", bits)
		}
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	default:
		return nil, fmt.Errorf("dkim: algorithm %q: want %s or %s", algo, AlgoRSA, AlgoEd25519)
	}
}

// Algorithm names the key type of s as a DKIM record's k= tag does, or
// returns an error for a key DKIM cannot use.
func Algorithm(s crypto.Signer) (string, error) {
	switch pub := s.Public().(type) {
	case *rsa.PublicKey:
		if pub.Size()*8 < MinRSABits {
			return "", fmt.Errorf("rsa key of %d bits is too short: receivers ignore signatures from keys under %d bits (RFC 8301 section 3.2)", pub.Size()*8, MinRSABits)
		}
		return AlgoRSA, nil
	case ed25519.PublicKey:
		return AlgoEd25519, nil
	default:
		return "", fmt.Errorf("unsupported key type %T: want rsa or ed25519", pub)
	}
}

// WriteKey stores key at path as a PKCS#8 PEM file of mode 0600. It never
// replaces an existing file, so a second keygen cannot destroy a key whose
// public half is already published; and it writes a temporary file first,
// so a crash leaves either no key or a whole one.
func WriteKey(path string, key crypto.Signer) (err error) {
	if _, err := Algorithm(key); err != nil {
		return fmt.Errorf("write dkim key %s: %w", path, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("write dkim key %s: %w", path, err)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("write dkim key %s: file already exists; choose another --out or selector", path)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".dkim-*.tmp") // CreateTemp makes it 0600
	if err != nil {
		return fmt.Errorf("write dkim key %s: %w", path, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write dkim key %s: %w", path, err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		return fmt.Errorf("write dkim key %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write dkim key %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write dkim key %s: %w", path, err)
	}
	// A hard link, unlike rename, fails when the target exists: the no-clobber
	// promise holds even against a file created since the check above.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write dkim key %s: file already exists; choose another --out or selector", path)
		}
		// Some file systems have no hard links; fall back to rename.
		if _, serr := os.Lstat(path); serr == nil {
			return fmt.Errorf("write dkim key %s: file already exists; choose another --out or selector", path)
		}
		if rerr := os.Rename(tmp.Name(), path); rerr != nil {
			return fmt.Errorf("write dkim key %s: %w", path, rerr)
		}
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // make the new name durable; best effort
		d.Close()
	}
	return nil
}

// LoadKey reads a PEM private key (PKCS#8 as WriteKey writes it, or the
// PKCS#1 "RSA PRIVATE KEY" that opendkim-genkey and openssl genrsa make). It
// refuses a file that group or others may read or write: whoever reads the
// key can sign mail as the domain.
func LoadKey(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	switch perm := st.Mode().Perm(); {
	case perm&0o044 != 0:
		return nil, fmt.Errorf("dkim key %s is readable by others (mode %#o): chmod 600 it", path, perm)
	case perm&0o022 != 0:
		return nil, fmt.Errorf("dkim key %s is writable by others (mode %#o): chmod 600 it", path, perm)
	}
	data, err := readAll(f, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("dkim key %s: %w", path, err)
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("dkim key %s: %w", path, err)
	}
	return key, nil
}

func readAll(f *os.File, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes: not a key", limit)
	}
	return data, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block: want a PEM private key (mailgate dkim keygen writes one)")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("the key is encrypted; mailgate needs it in the clear (openssl pkcs8 -in KEY -out PLAIN), protected by file mode 0600")
	default:
		return nil, fmt.Errorf("PEM block %q: want PRIVATE KEY or RSA PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T: want rsa or ed25519", key)
	}
	if _, err := Algorithm(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Key is a signing key and where its public half is published.
type Key struct {
	Domain   string // the signing domain, d= (RFC 6376 section 3.5)
	Selector string // s=; the record lives at <selector>._domainkey.<domain>
	Signer   crypto.Signer
}

// RecordName is the DNS name of the key's TXT record (RFC 6376 section 3.6.2.1).
func (k Key) RecordName() string {
	return k.Selector + "._domainkey." + normDomain(k.Domain)
}

// Algorithm is "rsa" or "ed25519", or "" for a key DKIM cannot use.
func (k Key) Algorithm() string {
	a, _ := Algorithm(k.Signer)
	return a
}

// RecordValue is the key's TXT record: for RSA, p= is the DER
// SubjectPublicKeyInfo (RFC 6376 section 3.6.1); for Ed25519 it is the bare
// 32-byte public key (RFC 8463 section 4.2), not an SPKI.
func (k Key) RecordValue() string {
	switch pub := k.Signer.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return ""
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	}
	return ""
}

// SplitTXT cuts a TXT value into character-strings of at most 255 bytes, the
// most one DNS string holds (RFC 1035 section 3.3.14). A 2048-bit RSA key
// does not fit in one; receivers join the strings back (RFC 6376 section
// 3.6.2.2).
func SplitTXT(value string) []string {
	var out []string
	for len(value) > 255 {
		out = append(out, value[:255])
		value = value[255:]
	}
	return append(out, value)
}

// QuoteTXT renders value as zone-file text: SplitTXT's strings, each quoted,
// separated by spaces.
func QuoteTXT(value string) string {
	parts := SplitTXT(value)
	for i, p := range parts {
		p = strings.ReplaceAll(p, `\`, `\\`)
		parts[i] = `"` + strings.ReplaceAll(p, `"`, `\"`) + `"`
	}
	return strings.Join(parts, " ")
}
