package smtprelay

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
)

// A message is DKIM-signed once: the DKIM-Signature fields made at its
// first direct try are kept in its record (Begin saves them before the
// try sends anything) and put on top of the same bytes at every later
// try, for every recipient domain. Signing again would only cost CPU (an
// RSA signature is about a millisecond) and produce an equivalent
// signature: nothing in it depends on the try. A signature has no expiry
// (no x= tag), so an old t= stays valid (RFC 6376 section 3.5).

// savedSignature is a message's DKIM-Signature fields and what they sign.
type savedSignature struct {
	// For is a digest of the bytes signed and of the names of the keys
	// that signed them: any change (a rewritten From, a new key) signs
	// anew.
	For    string `json:"for"`
	Fields string `json:"fields"`
}

// keyLister is what a Signer may also say: the keys a domain's mail is
// signed with (package dkim's Signer does).
type keyLister interface {
	Keys(domain string) string
}

// sign returns data with m's DKIM signature on top: the saved one when it
// signs these bytes with these keys, else a new one, saved in m.
func (r *Relay) sign(m *Message, data []byte, domain string) ([]byte, error) {
	keys := ""
	if kl, ok := r.opts.Signer.(keyLister); ok {
		keys = kl.Keys(domain)
	}
	h := sha256.New()
	h.Write([]byte(keys))
	h.Write([]byte{0})
	h.Write(data)
	sum := base64.RawStdEncoding.EncodeToString(h.Sum(nil))
	if s := m.DKIM; s != nil && s.For == sum {
		out := make([]byte, 0, len(s.Fields)+len(data))
		return append(append(out, s.Fields...), data...), nil
	}
	signed, err := r.opts.Signer.Sign(data)
	if err != nil {
		return nil, err
	}
	// The signer puts its fields on top of data, made CRLF; only when data
	// was CRLF already are they what to put on top next time.
	if bytes.HasSuffix(signed, data) {
		m.DKIM = &savedSignature{For: sum, Fields: string(signed[:len(signed)-len(data)])}
	}
	return signed, nil
}
