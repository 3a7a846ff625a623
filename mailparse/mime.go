package mailparse

import (
	"bytes"
	"encoding/base64"
	"io"
	"maps"
	"mime"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"
)

// multipart walks the parts of a multipart entity (RFC 2046 section 5.1)
// with go-message's multipart reader, streaming: a nested multipart reads
// from its parent's part, so no part is copied before it is a leaf.
func (w *walker) multipart(mt string, params map[string]string, body []byte, r io.Reader, depth int, ctx walkCtx) {
	if depth >= maxDepth {
		w.problem("%s: nested deeper than %d, ignored", mt, maxDepth)
		return
	}
	boundary := params["boundary"]
	if boundary == "" {
		if r != nil && !w.partsOnly {
			body = w.readAll(r)
		}
		w.problem("%s: no boundary, body kept as text", mt)
		w.plainText(body)
		return
	}
	sub := mt[len("multipart/"):]
	inner := walkCtx{parent: sub, inRelated: ctx.inRelated || sub == "related"}
	if w.lenient {
		w.lenientMultipart(mt, boundary, body, depth, inner)
		return
	}
	if r == nil {
		w.body.Reset(body)
		r = &w.body
	}
	mr := textproto.NewMultipartReader(r, boundary)
	pr := &partReader{w: w, mt: mt, boundary: boundary}
	for w.entities <= maxParts {
		part, err := mr.NextPart()
		if err == io.EOF {
			return // close delimiter seen
		}
		if err != nil {
			// No delimiter at all, a malformed part header or a delimiter
			// the reader misreads: see lenientMultipart.
			w.retry = true
			return
		}
		pr.r = part
		w.entity(part.Header, nil, pr, depth+1, inner)
		if w.retry {
			return
		}
		if _, err := io.Copy(io.Discard, pr); err != nil || pr.cut {
			return // truncated: the parts read so far are all there is
		}
	}
}

// partReader reads one part for the walker and notes a truncation.
type partReader struct {
	r            io.Reader
	w            *walker
	mt, boundary string
	cut          bool
}

func (p *partReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	// go-message's reader returns io.ErrUnexpectedEOF when the body ends
	// before the close delimiter: the message was cut in transit. The bytes
	// before the cut are kept. Reported here, on first sight, so that the
	// Problem comes before those of the part being read.
	if err == io.ErrUnexpectedEOF && !p.cut {
		p.cut = true
		if p.w.bareLFClose(p.boundary) {
			p.w.retry = true // the reader's misreading, not a cut: see bareLFClose
		} else {
			p.w.problem("%s: closing boundary %q missing (truncated message?)", p.mt, clip(p.boundary))
		}
	}
	return n, err
}

// bareLFClose reports whether the message has a close delimiter for
// boundary after a bare LF. RFC 2046 section 5.1.1 delimiters end in CRLF,
// and go-message's reader, which also accepts LF, takes the line break
// from the first delimiter line; when that one ends in CRLF and the others
// in LF (MIME assembled by scripts, footers added by other tools), it
// finds no other delimiter and reads the rest of the body, MIME headers
// and all, as one truncated part.
func (w *walker) bareLFClose(boundary string) bool {
	delim := []byte("\n--" + boundary + "--")
	for s := w.msg; ; {
		i := bytes.Index(s, delim)
		if i < 0 {
			return false
		}
		if i == 0 || s[i-1] != '\r' {
			return true
		}
		s = s[i+1:]
	}
}

// readAll reads a part into the walker's scratch buffer, which the next
// call reuses: callers copy what they keep. The buffer starts at half the
// message, more than most leaves of a multipart need; for Parts, which
// reads only a forwarded message without a name, it starts small.
func (w *walker) readAll(r io.Reader) []byte {
	b := w.raw[:0]
	if cap(b) == 0 {
		n := len(w.msg) / 2
		if w.partsOnly {
			n = 0
		}
		b = make([]byte, 0, max(n, 512))
	}
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b)+512)
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			break
		}
	}
	w.raw = b
	return b
}

// params parses a field with parameters (RFC 2045 section 5.1) such as
// Content-Type or Content-Disposition with mime.ParseMediaType, which also
// joins and decodes RFC 2231 continuations. Values it rejects or would get
// wrong go to lenientParams. RFC 2047 encoded-words, which Outlook and
// Gmail put in name=, are decoded too.
func (w *walker) params(v, field string) (string, map[string]string) {
	if strings.TrimSpace(v) == "" {
		return "", nil
	}
	if !utf8.ValidString(v) || !stdlib2231(v) {
		return w.lenientParams(v, field)
	}
	value, params, err := mime.ParseMediaType(v)
	if err != nil {
		return w.lenientParams(v, field)
	}
	words := false
	for name, val := range params {
		if !utf8.ValidString(val) {
			return w.lenientParams(v, field)
		}
		words = words || name != "boundary" && strings.Contains(val, "=?")
	}
	if words {
		// Sorted, so that Problems come in a stable order.
		for _, name := range slices.Sorted(maps.Keys(params)) {
			if val := params[name]; name != "boundary" && strings.Contains(val, "=?") {
				params[name] = w.decodeWords(val, field)
			}
		}
	}
	return value, params
}

// stdlib2231 reports whether mime.ParseMediaType decodes every RFC 2231
// extended value in v (name*=charset'lang'%XX... and its continuations):
// it silently drops those in a charset other than UTF-8 or US-ASCII, or
// with a broken %-escape.
func stdlib2231(v string) bool {
	for rest := v; ; {
		i := strings.Index(rest, "*=")
		if i < 0 {
			return true
		}
		rest = rest[i+2:]
		val := strings.TrimLeft(rest, " \t")
		if end := strings.IndexAny(val, "; \t\r\n"); end >= 0 {
			val = val[:end]
		}
		if cs, after, ok := strings.Cut(val, "'"); ok {
			if !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "us-ascii") {
				return false
			}
			_, val, _ = strings.Cut(after, "'")
		}
		for j := strings.IndexByte(val, '%'); j >= 0; j = strings.IndexByte(val, '%') {
			if j+2 >= len(val) || !isHex(val[j+1]) || !isHex(val[j+2]) {
				return false
			}
			val = val[j+3:]
		}
	}
}

// transferDecode undoes a Content-Transfer-Encoding (RFC 2045 section 6).
// inPlace says body is the walker's scratch, which decoding may overwrite;
// lf says line breaks may come out as LF. owned reports whether data is a
// new buffer; otherwise it is body or scratch, and must be copied to be
// kept.
func (w *walker) transferDecode(body []byte, inPlace, lf bool, cte, mt string) (data []byte, owned bool) {
	if cte != "" {
		cte = strings.ToLower(strings.Trim(strings.TrimSpace(stripComments(cte)), `"`))
	}
	switch cte {
	case "", "7bit", "8bit", "binary":
		return body, false
	case "base64":
		out, bad, cut := decodeBase64(w.dst(body, inPlace), body)
		if bad {
			w.problem("%s: invalid base64 characters skipped", mt)
		}
		if cut {
			w.problem("%s: base64 data truncated", mt)
		}
		return out, true
	case "quoted-printable":
		return decodeQP(w.dst(body, inPlace), body, lf), false
	}
	w.problem("%s: unknown Content-Transfer-Encoding %q, kept as is", mt, clip(cte))
	return body, false
}

// dst returns where to decode body: over itself if it is scratch, else
// into the walker's second scratch buffer.
func (w *walker) dst(body []byte, inPlace bool) []byte {
	if inPlace {
		return body
	}
	if cap(w.dec) < len(body) {
		w.dec = make([]byte, 0, len(body))
	}
	return w.dec
}

// decodeBase64 decodes base64 (RFC 2045 section 6.8) with encoding/base64.
// Well-formed bodies, lines of the alphabet ending in padding, take one
// Decode: it skips line breaks itself. It stops, though, at what else mail
// carries: stray characters and other white space (which section 6.8 says
// to ignore), a second encoding appended after padding (mailers that
// encode chunk by chunk), and a last group cut by a truncation, whose
// bytes it drops. Then src is reduced to the alphabet in scratch (which
// may be src itself), bad reporting skipped characters, and each run
// between padding is decoded unpadded; cut reports a final group without
// padding, the mark of a truncation.
func decodeBase64(scratch, src []byte) (out []byte, bad, cut bool) {
	out = make([]byte, base64.RawStdEncoding.DecodedLen(len(src))) // room for either
	if n, err := base64.StdEncoding.Decode(out, src); err == nil {
		return out[:n], false, false
	}
	in := scratch[:0]
	for _, c := range src {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/', c == '=':
			in = append(in, c)
		case c == ' ', c == '\t', c == '\r', c == '\n', c == '\f', c == '\v':
		default:
			bad = true
		}
	}
	n := 0
	for len(in) > 0 {
		run, rest, padded := bytes.Cut(in, []byte("="))
		in = bytes.TrimLeft(rest, "=")
		cut = !padded && len(run)%4 != 0
		if len(run)%4 == 1 { // 6 bits: not a byte
			run, bad = run[:len(run)-1], true
		}
		m, _ := base64.RawStdEncoding.Decode(out[n:], run)
		n += m
	}
	return out[:n], bad, cut
}

func stripComments(s string) string {
	if !strings.Contains(s, "(") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] == '(' {
			i = skipComment(s, i)
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}
