package mailparse

import (
	"bufio"
	"bytes"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"
)

// This file holds the parser's hand-written code, and only it. Each piece
// covers a case where the maintained library fails on real mail: it
// rejects or misreads it (the fallbacks, which run after the library has
// given up), or, for quoted-printable, it is too slow for the ingest
// budget. lenient_test.go shows the library failing on every case,
// so that a fallback can go once the library handles its case.

// lenientHeader separates a header from its body when textproto.ReadHeader
// rejected it: that reader stops at the first line that is not a field,
// so one bad line would turn the rest of the header into body. Here such
// lines (a bare word, "X Broken Header: ...", an mbox "From " line, a
// continuation with nothing to continue) are dropped with a Problem. An
// entity whose first line is not a field has no header at all (RFC 2046
// section 5.1.1 allows a part without header fields; broken mailers also
// omit the blank line).
func (w *walker) lenientHeader(raw []byte, where string) (textproto.Header, []byte) {
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

// lenientMultipart walks a multipart body that go-message's multipart
// reader gave up on or misread (RFC 2046 section 5.1.1). That reader stops
// for good, losing every part after it, at a part header with a malformed
// line (a long Content-Type folded without indentation), at a nested
// boundary that extends the outer one with "-" ("foo" and "foo-sub": its
// copy of mime/multipart predates the fix of golang.org/issue/46042), and
// at delimiters whose line breaks differ from the first one's (see
// bareLFClose). A body with no delimiter at all is kept as text.
func (w *walker) lenientMultipart(mt, boundary string, body []byte, depth int, inner walkCtx) {
	parts, closed := splitMultipart(body, boundary)
	if len(parts) == 0 {
		w.problem("%s: no part found for boundary %q, body kept as text", mt, clip(boundary))
		w.plainText(body)
		return
	}
	if !closed {
		w.problem("%s: closing boundary %q missing (truncated message?)", mt, clip(boundary))
	}
	for _, part := range parts {
		if w.entities > maxParts {
			break
		}
		ph, pbody := w.readHeader(part, mt+" part header")
		w.entity(ph, pbody, nil, depth+1, inner)
	}
}

// splitMultipart returns the parts of a multipart body (RFC 2046 section
// 5.1.1): what lies between delimiter lines, without the line break that
// belongs to the next delimiter. A delimiter is "--" boundary followed by
// white space only, so "--b-2" does not end a part of "b". closed is false
// when the close delimiter is missing; the last part then runs to the end.
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

// lenientParams parses a field with parameters (RFC 2045 section 5.1)
// that mime.ParseMediaType rejected or would decode wrongly: unquoted
// values with spaces or "=" (boundary=----=_Part_1), a missing closing
// quote, duplicates (the first wins), comments, raw 8-bit values, and RFC
// 2231 extended values in a charset other than UTF-8 or US-ASCII
// (filename*=iso-8859-1'fr'Re%E7u.txt), which the standard library drops.
// Parameter names are lower-cased; RFC 2231 values win over plain ones.
func (w *walker) lenientParams(v, field string) (string, map[string]string) {
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

// percentDecode undoes RFC 2231 %XX escapes, keeping a "%" that starts
// none (url.PathUnescape would reject the whole value).
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

// decodeQP decodes quoted-printable (RFC 2045 section 6.7) into dst[:0],
// which may be src itself: the output never overtakes the input. With lf,
// line breaks come out as LF, as Parsed's text has them.
//
// Hand-written for speed, not correctness: mime/quotedprintable's Reader
// stores a slice header per byte, and on a Gmail mail (text and HTML
// alternatives, both quoted-printable) it took half of Parse's time, most
// of the latency budget (BenchmarkDecodeQP). Wherever that reader succeeds
// this gives the same bytes (FuzzDecodeQP). Where it stops with an error,
// this goes on: at a raw control character, which mailers put in bodies
// they label quoted-printable (the ESC of ISO-2022-JP, form feeds), and at
// an "=" that starts no escape, which is kept, as rule 1 suggests. White
// space before a line break is transport padding (rule 3); an "=" that
// ends a line is a soft line break (rule 5).
func decodeQP(dst, src []byte, lf bool) []byte {
	out := dst[:0]
	for len(src) > 0 {
		line, eol := src, ""
		if i := bytes.IndexByte(src, '\n'); i >= 0 {
			line, src, eol = src[:i], src[i+1:], "\n"
			if i > 0 && line[i-1] == '\r' && !lf {
				eol = "\r\n"
			}
		} else {
			src = nil
		}
		n := len(line)
		for n > 0 && (line[n-1] == ' ' || line[n-1] == '\t' || line[n-1] == '\r') {
			n--
		}
		if n > 0 && line[n-1] == '=' {
			n, eol = n-1, "" // soft line break
		}
		line = line[:n]
		for {
			i := bytes.IndexByte(line, '=')
			if i < 0 {
				out = append(out, line...)
				break
			}
			out = append(out, line[:i]...)
			line = line[i:]
			// Escapes come in runs (UTF-8 sequences): decode the run.
			for len(line) > 0 && line[0] == '=' {
				if len(line) > 2 && isHex(line[1]) && isHex(line[2]) {
					out = append(out, unhex(line[1])<<4|unhex(line[2]))
					line = line[3:]
				} else {
					out = append(out, '=')
					line = line[1:]
				}
			}
		}
		out = append(out, eol...)
	}
	return out
}
