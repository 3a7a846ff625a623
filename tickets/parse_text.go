package tickets

import (
	"html"
	"strings"
	"unicode/utf8"
)

// unflow joins the soft line breaks of format=flowed text (RFC 3676
// section 4.2), so a paragraph is one line again, and removes
// space-stuffing. Quoted lines keep their ">" prefix.
func unflow(s string, delsp bool) string {
	var b, para strings.Builder
	depth, open := 0, false
	emit := func() {
		if depth > 0 {
			b.WriteString(strings.Repeat(">", depth))
			if para.Len() > 0 {
				b.WriteByte(' ')
			}
		}
		b.WriteString(para.String())
		b.WriteByte('\n')
		para.Reset()
		open = false
	}
	for _, line := range strings.Split(s, "\n") {
		d := 0
		for d < len(line) && line[d] == '>' {
			d++
		}
		content := strings.TrimPrefix(line[d:], " ")
		// A change of quote depth ends a paragraph even after a soft break
		// (section 4.5).
		if open && d != depth {
			emit()
		}
		depth = d
		open = true
		flowed := strings.HasSuffix(content, " ") && content != "-- "
		if flowed && delsp {
			content = content[:len(content)-1]
		}
		para.WriteString(content)
		if !flowed {
			emit()
		}
	}
	if open {
		emit()
	}
	return b.String()
}

// htmlToText renders an HTML body as plain text for agents and search:
// tags dropped, entities decoded, block elements and <br> turned into line
// breaks, list items into "- " lines and blockquotes into "> " lines.
// Scripts, styles and the title are skipped. It is a small tokenizer, not
// an HTML5 parser: good enough for mail, which needs no DOM.
func htmlToText(s string) string {
	t := &textOut{}
	for len(s) > 0 {
		lt := strings.IndexByte(s, '<')
		if lt < 0 {
			t.text(s)
			break
		}
		t.text(s[:lt])
		s = s[lt:]
		switch {
		case strings.HasPrefix(s, "<!--"):
			// An unterminated comment would hide the rest of the body;
			// keep the text rather than follow HTML5 here.
			end := -1
			if !t.noCommentEnd {
				end = strings.Index(s[4:], "-->")
				t.noCommentEnd = end < 0 // no need to look again
			}
			if end >= 0 {
				s = s[4+end+3:]
			} else {
				s = s[4:]
			}
			continue
		case strings.HasPrefix(s, "<!") || strings.HasPrefix(s, "<?"):
			end := strings.IndexByte(s, '>')
			if end < 0 {
				return t.String()
			}
			s = s[end+1:]
			continue
		}
		i := 1
		closing := i < len(s) && s[i] == '/'
		if closing {
			i++
		}
		start := i
		for i < len(s) && (isAlnum(s[i]) || s[i] == ':' || s[i] == '-') {
			i++
		}
		if i == start || !isAlpha(s[start]) {
			t.text("<") // a lone "<" in text
			s = s[1:]
			continue
		}
		name := strings.ToLower(s[start:i])
		end := tagEnd(s, i)
		if end < 0 {
			return t.String()
		}
		s = s[end+1:]
		if !closing && (name == "script" || name == "style" || name == "title") {
			// Raw text elements: their content is not markup.
			j := indexFold(s, "</"+name)
			if j < 0 {
				return t.String()
			}
			s = s[j:]
			continue
		}
		t.tag(name, closing)
	}
	return t.String()
}

// tagEnd returns the index of the ">" that closes the tag starting at s[0],
// skipping quoted attribute values.
func tagEnd(s string, i int) int {
	var quote, prev byte
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case (c == '"' || c == '\'') && prev == '=':
			quote = c
		case c == '>':
			return i
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			prev = c
		}
	}
	return -1
}

func indexFold(s, sub string) int {
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		if strings.EqualFold(s[i:i+n], sub) {
			return i
		}
	}
	return -1
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isAlnum(c byte) bool { return isAlpha(c) || '0' <= c && c <= '9' }

// textOut accumulates rendered text. Line breaks are requested, not
// written, so that a run of closing and opening blocks yields at most one
// blank line and none at the start or end.
type textOut struct {
	b         []byte
	breaks    int  // line breaks owed before the next text
	space     bool // a collapsed white space owed before the next text
	lineStart bool
	quote     int // blockquote depth
	pre       int // <pre> depth: white space is kept

	noCommentEnd bool // no "-->" follows: unterminated comments are text
}

// maxQuotePrefix bounds the "> " prefix, so nested blockquotes cannot make
// the text quadratic in the input.
const maxQuotePrefix = 10

func (t *textOut) prefix(sep string) string {
	return strings.Repeat(sep, min(t.quote, maxQuotePrefix))
}

var (
	paraTags = map[string]bool{"p": true, "h1": true, "h2": true, "h3": true, "h4": true, "h5": true, "h6": true,
		"ul": true, "ol": true, "dl": true, "table": true, "blockquote": true, "pre": true, "hr": true}
	lineTags = map[string]bool{"div": true, "tr": true, "li": true, "dt": true, "dd": true, "address": true,
		"article": true, "aside": true, "section": true, "header": true, "footer": true, "nav": true,
		"figure": true, "figcaption": true, "form": true, "fieldset": true, "center": true, "caption": true,
		"main": true, "body": true}
)

func (t *textOut) tag(name string, closing bool) {
	switch {
	case name == "br":
		t.breaks = min(t.breaks+1, 2)
		t.space = false
	case paraTags[name]:
		t.block(2)
	case lineTags[name]:
		t.block(1)
	case name == "td" || name == "th":
		t.space = true
	}
	switch name {
	case "blockquote":
		if closing {
			t.quote = max(t.quote-1, 0)
		} else {
			t.quote++
		}
	case "pre":
		if closing {
			t.pre = max(t.pre-1, 0)
		} else {
			t.pre++
		}
	case "li":
		if !closing {
			t.raw("- ")
		}
	}
}

func (t *textOut) block(n int) {
	t.breaks = max(t.breaks, n)
	t.space = false
}

func (t *textOut) text(s string) {
	if s == "" {
		return
	}
	if strings.IndexByte(s, '&') >= 0 {
		s = html.UnescapeString(s)
	}
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		if t.pre > 0 {
			switch r {
			case '\r':
				continue
			case '\n':
				t.breaks = min(t.breaks+1, 2)
				t.lineStart = true // keep leading white space on the next line
				continue
			}
			t.flush()
			t.b = utf8.AppendRune(t.b, r)
			continue
		}
		switch r {
		case ' ', '\t', '\n', '\r', '\f', '\u00a0', '\u200b':
			t.space = true
			continue
		}
		t.flush()
		t.b = utf8.AppendRune(t.b, r)
	}
}

// raw writes s as is, after any owed line breaks.
func (t *textOut) raw(s string) {
	t.flush()
	t.b = append(t.b, s...)
	t.space = false
}

// flush writes the owed line breaks or space before the next character.
func (t *textOut) flush() {
	if len(t.b) == 0 {
		t.breaks, t.space = 0, false
		t.lineStart = true
	}
	if t.breaks > 0 {
		t.b = trimTrailingSpaces(t.b)
		for i := 0; i < t.breaks; i++ {
			if i > 0 && t.quote > 0 {
				t.b = append(t.b, t.prefix(">")...)
			}
			t.b = append(t.b, '\n')
		}
		t.breaks, t.space = 0, false
		t.lineStart = true
	}
	if t.lineStart {
		if t.quote > 0 {
			t.b = append(t.b, t.prefix("> ")...)
		}
		t.lineStart, t.space = false, false
		return
	}
	if t.space && t.pre == 0 {
		t.b = append(t.b, ' ')
	}
	t.space = false
}

func trimTrailingSpaces(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func (t *textOut) String() string {
	return strings.TrimSpace(string(t.b))
}
