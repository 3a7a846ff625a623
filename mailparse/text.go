package mailparse

import (
	"bytes"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/html"
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
// Scripts, styles and the title are skipped. Tokens come from
// golang.org/x/net/html's tokenizer; mail needs no DOM, so there is no
// tree building.
func htmlToText(s string) string {
	t := &textOut{}
	t.render(s, true)
	return t.String()
}

// render tokenizes s into t. An unterminated "<!--" makes the HTML5
// tokenizer treat the rest of the body as a comment; mail cut by a
// truncation or a mailer's bug would then show nothing, so (once, and
// only when reopen is set) the rest is rendered again as if the "<!--"
// were not there.
func (t *textOut) render(s string, reopen bool) {
	sr := strings.NewReader(s)
	z := html.NewTokenizer(sr)
	skip := false // the raw text of a script, style or title comes next
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return
		case html.TextToken:
			if !skip {
				t.text(z.Text())
			}
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
			name, _ := z.TagName()
			if tt != html.EndTagToken {
				switch string(name) {
				case "script", "style", "title":
					skip = true
					continue
				}
				// Other raw text elements (textarea, noscript, xmp...) hold
				// markup in mail as in any other element.
				z.NextIsNotRawText()
			}
			t.tag(string(name), tt == html.EndTagToken)
		case html.CommentToken:
			raw := z.Raw()
			atEOF := sr.Len() == 0 && len(z.Buffered()) == 0
			if reopen && atEOF && bytes.HasPrefix(raw, []byte("<!--")) &&
				!bytes.HasSuffix(raw, []byte("-->")) && !bytes.HasSuffix(raw, []byte("--!>")) {
				// The rest of s, without its "<!--" openers, which can
				// have no end either.
				t.render(strings.ReplaceAll(string(raw[4:]), "<!--", ""), false)
				return
			}
		}
		skip = false
	}
}

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

func (t *textOut) text(s []byte) {
	for len(s) > 0 {
		r, size := rune(s[0]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(s)
		}
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
		// The ASCII rest of a word needs no checks: copy it at once.
		n := 0
		for n < len(s) && ' ' < s[n] && s[n] < utf8.RuneSelf {
			n++
		}
		t.b = append(t.b, s[:n]...)
		s = s[n:]
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
