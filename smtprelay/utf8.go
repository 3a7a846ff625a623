package smtprelay

// This file carries internationalised mail (RFC 6531, SMTPUTF8) out of
// the relay: to a server that offers SMTPUTF8 it goes as it came, MAIL
// FROM saying SMTPUTF8; to one that does not, what can be written in ASCII
// is (header text as RFC 2047 encoded-words, IDN domains as A-labels), and
// only what cannot, an address whose local part is not ASCII, bounces with
// 5.6.7, as RFC 6531 section 3.2 asks.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
	"golang.org/x/net/idna"
)

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// asciiDomain returns domain with its U-labels as A-labels
// ("bücher.example" → "xn--bcher-kva.example"), or domain itself when it
// is ASCII or no valid IDN.
func asciiDomain(domain string) string {
	if isASCII(domain) {
		return domain
	}
	a, err := idna.Lookup.ToASCII(domain)
	if err != nil {
		return domain
	}
	return a
}

// needsSMTPUTF8 reports whether the envelope or the header carries
// non-ASCII text. (A UTF-8 body in an 8bit part needs 8BITMIME, not
// SMTPUTF8.)
func needsSMTPUTF8(from string, rcpts []string, data []byte) bool {
	if !isASCII(from) {
		return true
	}
	for _, rc := range rcpts {
		if !isASCII(rc) {
			return true
		}
	}
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	return !isASCII(string(head))
}

// errNoSMTPUTF8 is why addr cannot reach a server without SMTPUTF8.
func errNoSMTPUTF8(addr, where string) error {
	return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
		Message: fmt.Sprintf("the next server does not offer SMTPUTF8, and the %s <%s> has a non-ASCII local part, which cannot be written in ASCII (RFC 6531 section 3.2)", where, printable(addr))}
}

// asciiAddress returns addr with an A-label domain, or errNoSMTPUTF8 when
// its local part is not ASCII.
func asciiAddress(addr, where string) (string, error) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || !isASCII(addr[:at]) {
		return "", errNoSMTPUTF8(addr, where)
	}
	return addr[:at+1] + asciiDomain(addr[at+1:]), nil
}

// addressFields hold addresses: their non-ASCII is downgraded address by
// address; every other field is treated as text (RFC 6857 section 3.2).
var addressFields = map[string]bool{
	"From": true, "Sender": true, "Reply-To": true, "To": true, "Cc": true, "Bcc": true,
	"Resent-From": true, "Resent-Sender": true, "Resent-To": true, "Resent-Cc": true, "Resent-Bcc": true,
}

// downgradeHeader writes data's header fields that carry non-ASCII in
// ASCII: display names and text as RFC 2047 encoded-words (UTF-8, Q
// encoding), domains as A-labels. An address with a non-ASCII local part
// cannot be downgraded: errNoSMTPUTF8. The body is kept as it is.
func downgradeHeader(data []byte) ([]byte, error) {
	br := bufio.NewReader(bytes.NewReader(data))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, err
	}
	type field struct {
		raw  []byte
		k, v string
	}
	var fields []field
	for f := h.Fields(); f.Next(); {
		raw, _ := f.Raw()
		k, v := f.Key(), f.Value()
		if isASCII(v) {
			fields = append(fields, field{raw: raw})
			continue
		}
		if !addressFields[k] {
			fields = append(fields, field{k: k, v: mime.QEncoding.Encode("utf-8", v)})
			continue
		}
		list, err := mail.ParseAddressList(v)
		if err != nil {
			return nil, fmt.Errorf("the %s field cannot be read to write it in ASCII: %w", k, err)
		}
		var out []string
		for _, a := range list {
			if a.Address, err = asciiAddress(a.Address, k+" address"); err != nil {
				return nil, err
			}
			out = append(out, a.String())
		}
		fields = append(fields, field{k: k, v: strings.Join(out, ", ")})
	}
	// go-message writes the field added last first: add bottom up.
	var down textproto.Header
	for i := len(fields) - 1; i >= 0; i-- {
		if f := fields[i]; f.raw != nil {
			down.AddRaw(f.raw)
		} else {
			down.Add(f.k, f.v)
		}
	}
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, down); err != nil {
		return nil, err
	}
	b.ReadFrom(br)
	return b.Bytes(), nil
}

// sendDowngraded sends to a server without SMTPUTF8 what can be written
// in ASCII; sign, if set, signs the downgraded message again (the relay's
// DKIM signature covered the header as it was). Results are under the
// recipients' names as given.
func sendDowngraded(c *smtp.Client, from string, rcpts []string, data []byte, sign func([]byte) []byte) Result {
	asciiFrom, err := asciiAddress(from, "sender")
	if from == "" {
		asciiFrom, err = "", nil
	}
	if err != nil {
		return failAll(rcpts, err, Bounced)
	}
	down, err := downgradeHeader(data)
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			err = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
				Message: "the next server does not offer SMTPUTF8, and the message's header cannot be written in ASCII: " + err.Error()}
		}
		return failAll(rcpts, err, Bounced)
	}
	if sign != nil {
		down = sign(down)
	}
	res := make(Result, len(rcpts))
	var ascii []string
	var at []int
	for i, rc := range rcpts {
		a, err := asciiAddress(rc, "recipient")
		if err != nil {
			res[i] = RcptResult{Rcpt: rc, Outcome: Bounced, Err: err}
			continue
		}
		ascii, at = append(ascii, a), append(at, i)
	}
	if len(ascii) == 0 {
		return res
	}
	for j, rr := range sendAs(c, asciiFrom, ascii, down, nil) {
		rr.Rcpt = rcpts[at[j]]
		res[at[j]] = rr
	}
	return res
}

// resign signs a downgraded message again: the relay's DKIM-Signature
// fields (those on top, above its Received field) are dropped, and the
// message is signed anew when the relay holds a key for its From domain.
func (r *Relay) resign(data []byte) []byte {
	br := bufio.NewReader(bytes.NewReader(data))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return data
	}
	for f := h.Fields(); f.Next(); {
		if f.Key() != "Dkim-Signature" {
			break
		}
		f.Del()
	}
	var b bytes.Buffer
	textproto.WriteHeader(&b, h)
	b.ReadFrom(br)
	unsigned := b.Bytes()
	if hd := readHeader(unsigned); r.canSign(domainOf(hd.from)) {
		if signed, err := r.opts.Signer.Sign(unsigned); err == nil {
			return signed
		}
	}
	return unsigned
}
