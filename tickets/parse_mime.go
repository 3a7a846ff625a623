package tickets

import (
	"bufio"
	"bytes"
	"io"
	"maps"
	"mime"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
	"golang.org/x/text/encoding/charmap"
)

// splitHeader separates an entity's header from its body. Lines that are
// not header fields are dropped with a Problem instead of ending the
// header, as textproto.ReadHeader would, so one bad line does not turn the
// rest of the header into body. An entity whose first line is not a field
// has no header at all (RFC 2046 section 5.1.1 allows a part without
// header fields; broken mailers also omit the blank line).
func (w *walker) splitHeader(raw []byte, where string) (textproto.Header, []byte) {
	var kept bytes.Buffer
	pos, bodyStart := 0, len(raw)
	first, inField := true, false
	for pos < len(raw) {
		next := len(raw)
		if i := bytes.IndexByte(raw[pos:], '\n'); i >= 0 {
			next = pos + i + 1
		}
		line := bytes.TrimRight(raw[pos:next], "\r\n")
		switch {
		case len(line) == 0:
			bodyStart = next
			next = len(raw) // stop
		case line[0] == ' ' || line[0] == '\t':
			if inField {
				kept.Write(line)
				kept.WriteString("\r\n")
			} else if where != "" && len(bytes.TrimSpace(line)) > 0 {
				w.problem("%s: dropped continuation line %q", where, clip(string(line)))
			}
		case isHeaderField(line):
			kept.Write(line)
			kept.WriteString("\r\n")
			inField = true
		case first && bytes.HasPrefix(line, []byte("From ")):
			// mbox envelope line, not part of the message.
		case first:
			if where != "" {
				w.problem("%s: no header fields, all kept as body", where)
			}
			return textproto.Header{}, raw
		default:
			if where != "" {
				w.problem("%s: dropped malformed line %q", where, clip(string(line)))
			}
			inField = false
		}
		first = false
		pos = next
	}
	kept.WriteString("\r\n")
	// Sized to the header: the default 4 KiB buffer per part was a third
	// of what parsing a typical mail allocated.
	h, err := textproto.ReadHeader(bufio.NewReaderSize(&kept, kept.Len()))
	if err != nil && where != "" {
		w.problem("%s: %v", where, err)
	}
	return h, raw[bodyStart:]
}

// isHeaderField reports whether line starts a field: a name of printable
// ASCII other than ":" followed by ":" (RFC 5322 section 2.2).
func isHeaderField(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

// splitMultipart returns the parts of a multipart body (RFC 2046 section
// 5.1.1): what lies between delimiter lines, without the line break that
// belongs to the next delimiter. closed is false when the close delimiter
// is missing; the last part then runs to the end of the body.
func splitMultipart(body []byte, boundary string) (parts [][]byte, closed bool) {
	delim := []byte("--" + boundary)
	start := -1
	for pos := 0; pos < len(body); {
		i := bytes.Index(body[pos:], delim)
		if i < 0 {
			break
		}
		i += pos
		pos = i + len(delim)
		if i > 0 && body[i-1] != '\n' {
			continue
		}
		rest := body[pos:]
		final := bytes.HasPrefix(rest, []byte("--"))
		if final {
			rest = rest[2:]
		}
		lineEnd := len(body)
		if j := bytes.IndexByte(rest, '\n'); j >= 0 {
			lineEnd = len(body) - len(rest) + j + 1
			rest = rest[:j]
		}
		// "--b" followed by anything but white space is another boundary
		// that starts with ours, typically a nested multipart's.
		if len(bytes.Trim(rest, " \t\r")) != 0 {
			continue
		}
		if start >= 0 {
			end := i
			if end > start && body[end-1] == '\n' {
				end--
				if end > start && body[end-1] == '\r' {
					end--
				}
			}
			parts = append(parts, body[start:end])
		}
		if final {
			return parts, true
		}
		start = lineEnd
		pos = lineEnd
	}
	if start >= 0 {
		parts = append(parts, body[start:])
	}
	return parts, false
}

// params parses a field with parameters (RFC 2045 section 5.1) such as
// Content-Type or Content-Disposition, leniently: unquoted values with
// spaces, a trailing ";", duplicates (the first wins) and a missing
// closing quote are accepted. Parameter names are lower-cased. RFC 2231
// extended and continued values (filename*0*=utf-8”...) are joined and
// decoded, and win over the plain value; RFC 2047 encoded-words, which
// Outlook and Gmail put in name=, are decoded too.
func (w *walker) params(v, field string) (string, map[string]string) {
	params := map[string]string{}
	value, rest, _ := strings.Cut(v, ";")
	value = strings.ToLower(strings.Trim(stripComments(value), " \t\"'"))

	type section struct {
		val string
		ext bool
	}
	sections := map[string]map[int]section{}
	plain := map[string]string{}
	for {
		rest = strings.TrimLeft(rest, " \t\r\n;")
		if rest == "" {
			break
		}
		eq := strings.IndexAny(rest, "=;")
		if eq < 0 {
			break
		}
		if rest[eq] == ';' {
			rest = rest[eq+1:]
			continue
		}
		attr := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimLeft(rest[eq+1:], " \t\r\n")
		var val string
		if strings.HasPrefix(rest, `"`) {
			val, rest = unquote(rest)
			if _, after, ok := strings.Cut(rest, ";"); ok {
				rest = after
			} else {
				rest = ""
			}
		} else {
			val, rest, _ = strings.Cut(rest, ";")
			val = strings.TrimSpace(val)
		}
		if attr == "" {
			continue
		}
		name, ext := strings.CutSuffix(attr, "*")
		idx := -1
		if i := strings.IndexByte(name, '*'); i >= 0 {
			n, err := strconv.Atoi(name[i+1:])
			if err != nil || n < 0 || n > 999 {
				continue
			}
			name, idx = name[:i], n
		}
		if idx < 0 && !ext {
			if _, dup := plain[name]; !dup {
				plain[name] = val
			}
			continue
		}
		idx = max(idx, 0)
		if sections[name] == nil {
			sections[name] = map[int]section{}
		}
		if _, dup := sections[name][idx]; !dup {
			sections[name][idx] = section{val, ext}
		}
	}

	// Sorted, so that Problems come in a stable order.
	for _, name := range slices.Sorted(maps.Keys(sections)) {
		secs := sections[name]
		var raw []byte
		charset := ""
		for i := 0; ; i++ {
			s, ok := secs[i]
			if !ok {
				break
			}
			if !s.ext {
				raw = append(raw, s.val...)
				continue
			}
			val := s.val
			if i == 0 { // charset'language'value, RFC 2231 section 4
				if cs, after, ok := strings.Cut(val, "'"); ok {
					if _, after, ok := strings.Cut(after, "'"); ok {
						charset, val = cs, after
					}
				}
			}
			raw = append(raw, percentDecode(val)...)
		}
		if _, ok := secs[0]; ok {
			params[name] = w.decodeCharset(raw, charset, field+" "+name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(plain)) {
		if _, ok := params[name]; ok {
			continue
		}
		val := plain[name]
		if !utf8.ValidString(val) {
			w.problem("%s: 8-bit parameter %s, decoded as windows-1252", field, name)
			val = windows1252(val)
		}
		if name != "boundary" && strings.Contains(val, "=?") {
			val = w.decodeWords(val, field)
		}
		params[name] = val
	}
	return value, params
}

// unquote reads the quoted-string at the start of s and returns its
// content and what follows. A backslash escapes only '"' and '\', so that
// unescaped Windows paths survive.
func unquote(s string) (string, string) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\'):
			i++
			b.WriteByte(s[i])
		case c == '"':
			return b.String(), s[i+1:]
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), ""
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

func percentDecode(s string) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		out = append(out, s[i])
	}
	return out
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// transferDecode undoes a Content-Transfer-Encoding (RFC 2045 section 6).
// Both decoders are lenient: bad input is skipped, not fatal, and a cut
// base64 body yields the bytes before the cut.
func (w *walker) transferDecode(body []byte, cte, mt string) []byte {
	cte = strings.ToLower(strings.Trim(strings.TrimSpace(stripComments(cte)), `"`))
	switch cte {
	case "", "7bit", "8bit", "binary":
		return body
	case "base64":
		out, bad, cut := decodeBase64(body)
		if bad {
			w.problem("%s: invalid base64 characters skipped", mt)
		}
		if cut {
			w.problem("%s: base64 data truncated", mt)
		}
		return out
	case "quoted-printable":
		return decodeQP(body)
	}
	w.problem("%s: unknown Content-Transfer-Encoding %q, kept as is", mt, clip(cte))
	return body
}

var b64 = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xFF
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	for _, c := range " \t\r\n\f\v" {
		t[c] = 0xFE
	}
	t['='] = 0xFD
	return t
}()

// decodeBase64 decodes base64 ignoring white space. Padding ends a group,
// so concatenated encodings decode too. bad reports skipped characters;
// cut reports a final group without padding, the mark of a truncation.
func decodeBase64(in []byte) (out []byte, bad, cut bool) {
	out = make([]byte, 0, len(in)/4*3+3)
	var q [4]byte
	n := 0
	flush := func() {
		switch n {
		case 1:
			bad = true
		case 2:
			out = append(out, q[0]<<2|q[1]>>4)
		case 3:
			out = append(out, q[0]<<2|q[1]>>4, q[1]<<4|q[2]>>2)
		}
		n = 0
	}
	for _, c := range in {
		switch v := b64[c]; v {
		case 0xFE:
		case 0xFD:
			flush()
		case 0xFF:
			bad = true
		default:
			q[n] = v
			n++
			if n == 4 {
				out = append(out, q[0]<<2|q[1]>>4, q[1]<<4|q[2]>>2, q[2]<<6|q[3])
				n = 0
			}
		}
	}
	if n != 0 {
		cut = true
		flush()
	}
	return out, bad, cut
}

// decodeQP decodes quoted-printable (RFC 2045 section 6.7). An "=" that
// starts no escape is kept, as rule 1 of section 6.7 suggests; white space
// before a line break is transport padding and removed.
func decodeQP(in []byte) []byte {
	out := make([]byte, 0, len(in))
	for len(in) > 0 {
		line := in
		eol := ""
		if i := bytes.IndexByte(in, '\n'); i >= 0 {
			line, in = in[:i], in[i+1:]
			eol = "\n"
			if len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
				eol = "\r\n"
			}
		} else {
			in = nil
		}
		line = bytes.TrimRight(line, " \t")
		if len(line) > 0 && line[len(line)-1] == '=' {
			line, eol = line[:len(line)-1], "" // soft line break
		}
		for i := 0; i < len(line); i++ {
			c := line[i]
			if c == '=' && i+2 < len(line) && isHex(line[i+1]) && isHex(line[i+2]) {
				c = unhex(line[i+1])<<4 | unhex(line[i+2])
				i += 2
			}
			out = append(out, c)
		}
		out = append(out, eol...)
	}
	return out
}

// decodeCharset converts text to UTF-8. It never drops text: an unknown
// or wrong charset gives a best guess and a Problem.
func (w *walker) decodeCharset(data []byte, charset, what string) string {
	cs := strings.ToLower(strings.Trim(strings.TrimSpace(charset), `"'`))
	if i := strings.IndexByte(cs, '*'); i >= 0 { // RFC 2231 section 5 language
		cs = cs[:i]
	}
	switch cs {
	case "", "us-ascii", "ascii", "utf-8", "utf8":
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

func normalizeNewlines(s string) string {
	if !strings.Contains(s, "\r") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}
