package mailparse

import (
	"bytes"
	"io"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"golang.org/x/text/encoding/charmap"
)

// decodeCharset converts text to UTF-8. It never drops text: an unknown
// or wrong charset gives a best guess and a Problem.
func (w *walker) decodeCharset(data []byte, charset, what string) string {
	cs := charsetLabel(charset)
	if isUTF8Label(cs) {
		if utf8.Valid(data) {
			return string(data)
		}
		if cs == "utf-8" || cs == "utf8" {
			w.problem("%s: invalid UTF-8 replaced", what)
			return strings.ToValidUTF8(string(data), "\uFFFD")
		}
		if cs == "" {
			w.problem("%s: 8-bit text without charset, decoded as windows-1252", what)
		} else {
			w.problem("%s: 8-bit text declared %s, decoded as windows-1252", what, cs)
		}
		return windows1252(string(data))
	}
	switch cs {
	case "iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "l1", "cp819":
		// The WHATWG Encoding Standard decodes these labels as
		// windows-1252: mailers that say latin1 routinely send curly quotes
		// and the euro sign from the 0x80-0x9F range.
		return windows1252(string(data))
	}
	if message.CharsetReader != nil {
		if r, err := message.CharsetReader(cs, bytes.NewReader(data)); err == nil && r != nil {
			out, err := io.ReadAll(r)
			if err != nil {
				w.problem("%s: charset %q: %v", what, clip(cs), err)
			}
			return strings.ToValidUTF8(string(out), "\uFFFD")
		}
	}
	w.problem("%s: unknown charset %q, decoded leniently", what, clip(cs))
	return lossyUTF8(data)
}

// headerText decodes an unstructured field (RFC 2047 encoded-words; raw
// 8-bit bytes that are not UTF-8 are read as windows-1252).
func (w *walker) headerText(v, field string) string {
	if !utf8.ValidString(v) {
		w.problem("%s: 8-bit bytes without encoding, decoded as windows-1252", field)
		v = windows1252(v)
	}
	return w.decodeWords(v, field)
}

func (w *walker) decodeWords(s, field string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	dec := mime.WordDecoder{CharsetReader: func(cs string, r io.Reader) (io.Reader, error) {
		data, _ := io.ReadAll(r)
		return strings.NewReader(w.decodeCharset(data, cs, field)), nil
	}}
	out, err := dec.DecodeHeader(s)
	if err != nil {
		w.problem("%s: %v", field, err)
		return s
	}
	return strings.ToValidUTF8(out, "\uFFFD")
}

func windows1252(s string) string {
	out, err := charmap.Windows1252.NewDecoder().String(s)
	if err != nil {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	return out
}

// lossyUTF8 is text of unknown charset: UTF-8 if it is valid, else the
// most common legacy charset of mail.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return windows1252(string(b))
}

// normalizeNewlines turns CRLF and lone CR line ends into LF.
func normalizeNewlines(s string) string {
	if !strings.Contains(s, "\r") {
		return s
	}
	return lfString([]byte(s))
}

// lfString copies b into a string with CRLF and lone CR turned into LF,
// in one pass and one allocation.
func lfString(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b))
	for i := bytes.IndexByte(b, '\r'); i >= 0; i = bytes.IndexByte(b, '\r') {
		sb.Write(b[:i])
		sb.WriteByte('\n')
		b = b[i+1:]
		if len(b) > 0 && b[0] == '\n' {
			b = b[1:]
		}
	}
	sb.Write(b)
	return sb.String()
}

// bodyText decodes a text body to UTF-8 with LF line ends. Valid UTF-8
// under a UTF-8 or ASCII label, most mail, takes a single copy.
func (w *walker) bodyText(data []byte, charset, what string) string {
	if utf8Label(charset) && utf8.Valid(data) {
		return lfString(data)
	}
	return normalizeNewlines(w.decodeCharset(data, charset, what))
}

// utf8Label reports whether decodeCharset reads text with this charset
// label as UTF-8.
func utf8Label(charset string) bool { return isUTF8Label(charsetLabel(charset)) }

// isUTF8Label is utf8Label for a label charsetLabel has normalised.
func isUTF8Label(cs string) bool {
	switch cs {
	case "", "us-ascii", "ascii", "utf-8", "utf8":
		return true
	}
	return false
}

// charsetLabel normalises a charset name as mailers write it.
func charsetLabel(charset string) string {
	cs := strings.ToLower(strings.Trim(strings.TrimSpace(charset), `"'`))
	if i := strings.IndexByte(cs, '*'); i >= 0 { // RFC 2231 section 5 language
		cs = cs[:i]
	}
	return cs
}
