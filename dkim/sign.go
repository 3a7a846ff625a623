package dkim

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	msgauth "github.com/emersion/go-msgauth/dkim"
)

// signedHeaders are the header fields a signature covers when present: the
// ones RFC 6376 section 5.4.1 recommends that a helpdesk notification carries.
// Trace and list fields are left out because relays legitimately add them.
var signedHeaders = []string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version",
	"Content-Type", "Reply-To", "In-Reply-To", "References",
}

// Signer signs outgoing mail with the keys of the From domain.
type Signer struct {
	keys map[string][]Key // by lower-case domain, in configuration order
}

// NewSigner checks the keys and indexes them by domain. A domain may have
// several keys (an RSA and an Ed25519 one): each message is signed with all.
func NewSigner(keys []Key) (*Signer, error) {
	s := &Signer{keys: map[string][]Key{}}
	seen := map[string]bool{}
	for _, k := range keys {
		if k.Domain == "" || k.Selector == "" || k.Signer == nil {
			return nil, fmt.Errorf("dkim: key %q: domain, selector and signer are required", k.RecordName())
		}
		if _, err := Algorithm(k.Signer); err != nil {
			return nil, fmt.Errorf("dkim: key %s: %w", k.RecordName(), err)
		}
		d := normDomain(k.Domain)
		id := k.Selector + "." + d
		if seen[id] {
			return nil, fmt.Errorf("dkim: key %s given twice", k.RecordName())
		}
		seen[id] = true
		k.Domain = d
		s.keys[d] = append(s.keys[d], k)
	}
	return s, nil
}

// CanSign reports whether a key is configured for domain: only then can a
// message From that domain leave directly and still pass DMARC by DKIM.
func (s *Signer) CanSign(domain string) bool {
	return len(s.keys[normDomain(domain)]) > 0
}

// Keys names the keys a message From domain is signed with (their DNS
// record names, in signing order): a signature made earlier with the same
// keys over the same bytes can be sent again instead of signing anew.
func (s *Signer) Keys(domain string) string {
	var names []string
	for _, k := range s.keys[normDomain(domain)] {
		names = append(names, k.RecordName())
	}
	return strings.Join(names, " ")
}

// Domains lists the domains that have a key.
func (s *Signer) Domains() []string {
	out := make([]string, 0, len(s.keys))
	for d := range s.keys {
		out = append(out, d)
	}
	return out
}

// Sign returns raw with a DKIM-Signature field prepended for each key of the
// From domain. Bare LF line endings are turned into CRLF first, so what is
// signed is what goes on the wire. It fails when the message has no single
// From or no key for its domain: what to do then is the relay's decision.
func (s *Signer) Sign(raw []byte) ([]byte, error) {
	msg := toCRLF(raw)
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
	if err != nil {
		return nil, fmt.Errorf("dkim: read header: %w", err)
	}
	domain, err := fromDomain(h)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	keys := s.keys[domain]
	if len(keys) == 0 {
		return nil, fmt.Errorf("dkim: no key for From domain %s", domain)
	}
	headerKeys := headerKeysFor(h)

	var sigs bytes.Buffer
	for _, k := range keys {
		signer, err := msgauth.NewSigner(&msgauth.SignOptions{
			Domain:   k.Domain,
			Selector: k.Selector,
			Signer:   k.Signer,
			// Relaxed survives the re-folding and whitespace changes that
			// relays make to headers (RFC 6376 section 3.4.2).
			HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
			BodyCanonicalization:   msgauth.CanonicalizationRelaxed,
			HeaderKeys:             headerKeys,
		})
		if err != nil {
			return nil, fmt.Errorf("dkim: sign with %s: %w", k.RecordName(), err)
		}
		if _, err := signer.Write(msg); err != nil {
			signer.Close()
			return nil, fmt.Errorf("dkim: sign with %s: %w", k.RecordName(), err)
		}
		if err := signer.Close(); err != nil {
			return nil, fmt.Errorf("dkim: sign with %s: %w", k.RecordName(), err)
		}
		sigs.WriteString(signer.Signature())
	}
	out := make([]byte, 0, sigs.Len()+len(msg))
	return append(append(out, sigs.Bytes()...), msg...), nil
}

// headerKeysFor lists each signed field as often as the message has it, and
// From once more. RFC 6376 section 5.4.2: naming a field one time more than
// it occurs signs its absence, so nobody can add a second From that a mail
// client might show instead of ours.
func headerKeysFor(h textproto.Header) []string {
	var keys []string
	for _, k := range signedHeaders {
		n := len(h.Values(k))
		if k == "From" {
			n++
		}
		for range n {
			keys = append(keys, k)
		}
	}
	return keys
}

// fromDomain is the domain of the message's author, the one DMARC aligns
// with (RFC 7489 section 3.1).
func fromDomain(h textproto.Header) (string, error) {
	froms := h.Values("From")
	if len(froms) != 1 {
		// RFC 5322 section 3.6 allows exactly one From; signing a message
		// with two would vouch for whichever one the reader's client shows.
		return "", fmt.Errorf("message has %d From fields, want exactly one", len(froms))
	}
	addrs, err := mail.ParseAddressList(froms[0])
	if err != nil {
		return "", fmt.Errorf("From %q: %w", froms[0], err)
	}
	if len(addrs) == 0 {
		return "", fmt.Errorf("From %q has no address", froms[0])
	}
	domain := ""
	for _, a := range addrs {
		at := strings.LastIndexByte(a.Address, '@')
		if at < 0 {
			return "", fmt.Errorf("From address %q has no domain", a.Address)
		}
		d := normDomain(a.Address[at+1:])
		if domain != "" && d != domain {
			return "", fmt.Errorf("From has addresses in %s and %s; one signature cannot cover both", domain, d)
		}
		domain = d
	}
	return domain, nil
}

func normDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
}

// toCRLF turns bare LF line endings into CRLF, leaving CRLF alone.
func toCRLF(b []byte) []byte {
	bare := 0
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			bare++
		}
	}
	if bare == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+bare)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}
