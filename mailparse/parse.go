package mailparse

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // registers ISO-8859-x, Windows-125x, ISO-2022-JP, GB18030, ...
	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// Parsed is what Parse extracts from one RFC 5322 message.
type Parsed struct {
	MessageID  string   // without angle brackets, "" if absent
	InReplyTo  []string // msg-ids without brackets
	References []string // msg-ids without brackets, in header order
	Subject    string   // RFC 2047-decoded, UTF-8
	From       Address  // Email lower-cased
	To, CC     []Address
	ReplyTo    []Address
	Date       time.Time // zero when missing or unparseable (unparseable adds a Problem)
	// Text is the plain-text body in UTF-8: the text/plain parts when there
	// are any (several are joined by a blank line), otherwise a rendering
	// of the HTML body. Line endings are "\n".
	Text string
	// HTML is the text/html body in UTF-8, if any.
	HTML string
	// Parts are the attachments and inline images, in MIME order.
	Parts []Part
	// Header is the top-level header, for rules that look at fields Parse
	// does not interpret (Auto-Submitted, Precedence, report types).
	Header gomail.Header
	// Problems says what could not be parsed; non-empty means malformed.
	Problems []string
}

// Address is a mailbox: a display name and a lower-cased address. Its JSON
// form is the one the ticket store keeps.
type Address struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email"`
}

// Part is one MIME leaf that is not the message's text: an attachment, an
// inline image, a forwarded message, a delivery report.
type Part struct {
	// ContentType is the media type, lower-cased, without parameters.
	ContentType string
	// Disposition is the Content-Disposition type, lower-cased
	// ("attachment", "inline"), or "" when the part has none.
	Disposition string
	// Filename is a base name, safe to store under: the part's own name
	// (RFC 2183 filename, else the Content-Type's name), the subject of a
	// forwarded message, or one made up from the type.
	Filename string
	// ContentID is the Content-ID without angle brackets (RFC 2392).
	ContentID string
	// Inline says the part is shown in place rather than offered as a
	// file: its disposition is inline (RFC 2183), or it has none and the
	// HTML of its multipart/related refers to it by cid: (RFC 2387).
	Inline bool
	// Data is the decoded content. Parts leaves it nil.
	Data []byte
}

// Limits that keep hostile input from costing more than a large honest mail.
const (
	maxDepth = 20   // nested multiparts; real mail rarely goes past 5
	maxParts = 1000 // MIME entities per message
)

// Parse extracts what the helpdesk needs from a raw message. It never fails
// and never panics: what cannot be parsed is reported in Problems and the
// fields are filled as well as the input allows. Every string field is
// valid UTF-8 by construction (each decoder replaces what it cannot map).
func Parse(raw []byte) *Parsed {
	p := &Parsed{}
	w := &walker{p: p, msg: raw}
	// Each phase is guarded on its own, so a bug in one (say, the address
	// fallback) still leaves the others' results.
	h, body := textproto.Header{}, raw
	w.guard(func() { h, body = w.readHeader(raw, "header") })
	p.Header = gomail.Header{Header: message.Header{Header: h}}
	w.guard(w.headers)
	w.guard(func() { w.walk(h, body) })
	w.guard(func() { w.finish(body) })
	return p
}

// Parts describes the attachments and inline parts of raw as Parse would:
// the same parts in the same order, with the same names and the same
// inline decision, but without decoding them or converting any charset,
// so Data is nil. The one body it may decode is the HTML text, and only
// when a part's inline decision depends on whether the HTML refers to it.
// Like Parse, it never fails; it reports no problems.
func Parts(raw []byte) []Part {
	w := &walker{p: &Parsed{}, msg: raw, partsOnly: true}
	h, body := textproto.Header{}, raw
	w.guard(func() { h, body = w.readHeader(raw, "") })
	w.guard(func() { w.walk(h, body) })
	w.guard(w.decideInline)
	return w.p.Parts
}

// walk descends the MIME tree with go-message's multipart reader. If that
// reader gives up on a multipart (see lenientMultipart), the tree is walked
// again from the start in lenient mode, so the two readings never mix.
func (w *walker) walk(h textproto.Header, body []byte) {
	mark := len(w.p.Problems)
	w.entity(h, body, nil, 0, walkCtx{})
	if !w.retry {
		return
	}
	for _, s := range w.p.Problems[mark:] {
		delete(w.seen, s)
	}
	w.p.Problems = w.p.Problems[:mark]
	w.p.Parts, w.inRelated, w.plains, w.htmls, w.rawHTML, w.entities = nil, nil, nil, nil, nil, 0
	w.retry, w.lenient = false, true
	w.entity(h, body, nil, 0, walkCtx{})
}

func (w *walker) guard(f func()) {
	defer func() {
		if r := recover(); r != nil {
			w.problem("parser panic: %v", r)
		}
	}()
	f()
}

// walker collects the bodies and parts of one message while it descends
// the MIME tree.
type walker struct {
	p         *Parsed
	msg       []byte // the whole message
	plains    []string
	htmls     []string
	inRelated []bool // parallel to p.Parts: inside a multipart/related
	entities  int
	seen      map[string]bool // Problems already reported

	retry     bool // go-message's multipart reader gave up: walk again
	lenient   bool // walking again, with the hand-written fallbacks
	partsOnly bool // Parts: describe the parts, decode nothing needless
	rawHTML   []rawText

	// Scratch space reused from part to part; what is kept is copied.
	raw  []byte // a part read from go-message's multipart reader
	dec  []byte // a decoded part whose input is not scratch
	rd   bytes.Reader
	br   *bufio.Reader
	body bytes.Reader // the message's body, when it is a multipart
}

// rawText is an HTML body that Parts keeps undecoded until it is needed.
type rawText struct {
	params map[string]string
	cte    string
	body   []byte
}

type walkCtx struct {
	parent    string // subtype of the enclosing multipart ("mixed", "related", ...)
	inRelated bool
}

// maxProblems bounds the list: a mail with thousands of bad lines is
// malformed, and saying so a hundred times is enough.
const maxProblems = 100

func (w *walker) problem(format string, args ...any) {
	if w.partsOnly {
		return
	}
	s := fmt.Sprintf(format, args...)
	if w.seen == nil {
		w.seen = map[string]bool{}
	}
	if w.seen[s] {
		return
	}
	w.seen[s] = true
	switch n := len(w.p.Problems); {
	case n < maxProblems:
		w.p.Problems = append(w.p.Problems, s)
	case n == maxProblems:
		w.p.Problems = append(w.p.Problems, "more problems not listed")
	}
}

// entity handles one MIME entity: it descends into multiparts and sorts
// leaves into bodies and parts. The body is in memory (the message's body,
// or any part in lenient mode), or else read from r, a part that
// go-message's multipart reader delimits.
func (w *walker) entity(h textproto.Header, body []byte, r io.Reader, depth int, ctx walkCtx) {
	w.entities++
	if w.entities > maxParts {
		if w.entities == maxParts+1 {
			w.problem("more than %d MIME parts, the rest ignored", maxParts)
		}
		return
	}
	mh := message.Header{Header: h}
	mt, params := w.contentType(mh, ctx)
	disp, dparams := w.params(mh.Get("Content-Disposition"), "Content-Disposition")

	if strings.HasPrefix(mt, "multipart/") {
		w.multipart(mt, params, body, r, depth, ctx)
		return
	}
	cte := mh.Get("Content-Transfer-Encoding")
	// A text part is the body unless it says it is an attachment
	// (RFC 2183 section 2.2).
	if (mt == "text/plain" || mt == "text/html") && disp != "attachment" {
		switch {
		case !w.partsOnly:
			if r != nil {
				body = w.readAll(r)
			}
			w.text(mt, params, cte, body, r != nil)
		case mt == "text/html":
			// Kept as it came: decideInline decodes it only if it must.
			if r != nil {
				body, _ = io.ReadAll(r) // its own buffer: scratch is reused
			}
			w.rawHTML = append(w.rawHTML, rawText{params, cte, body})
		}
		return
	}
	name := partName(params, dparams)
	if w.partsOnly && (name != "" || !isMessage(mt)) {
		w.addPart(mh, mt, disp, name, nil, ctx)
		return
	}
	// Parts, too, reads a forwarded message without a name of its own:
	// the part is named after its subject.
	if r != nil {
		body = w.readAll(r)
	}
	data, owned := w.transferDecode(body, r != nil, false, cte, mt)
	if !owned && !w.partsOnly {
		// data is the caller's buffer or scratch: keep neither alive nor
		// let their reuse change the part.
		data = bytes.Clone(data)
	}
	w.addPart(mh, mt, disp, name, data, ctx)
}

// text decodes a text body to UTF-8 and keeps it. inPlace says body is
// scratch that decoding may overwrite.
func (w *walker) text(mt string, params map[string]string, cte string, body []byte, inPlace bool) {
	// Line breaks can become LF while decoding only where the charset
	// decoder is not told otherwise later: UTF-8, not ISO-2022-JP (whose
	// decoder tracks CR) or UTF-16, nor HTML whose <meta> may name one.
	lf := utf8Label(params["charset"]) && (mt == "text/plain" || params["charset"] != "")
	data, _ := w.transferDecode(body, inPlace, lf, cte, mt)
	cs := params["charset"]
	if cs == "" && mt == "text/html" {
		cs = metaCharset(data)
	}
	s := w.bodyText(data, cs, mt)
	s = strings.TrimPrefix(s, "\uFEFF")
	if mt == "text/plain" {
		if strings.EqualFold(params["format"], "flowed") {
			s = unflow(s, strings.EqualFold(params["delsp"], "yes"))
		}
		w.plains = append(w.plains, s)
	} else {
		w.htmls = append(w.htmls, s)
	}
}

// plainText keeps a body of unknown charset as text.
func (w *walker) plainText(body []byte) {
	if !w.partsOnly {
		w.plains = append(w.plains, normalizeNewlines(lossyUTF8(body)))
	}
}

var metaCharsetRE = regexp.MustCompile(`(?i)<meta[^>]*charset\s*=\s*["']?\s*([a-z0-9_.:-]+)`)

// metaCharset finds the charset an HTML body declares for itself, for
// when the Content-Type has none.
func metaCharset(b []byte) string {
	if m := metaCharsetRE.FindSubmatch(b[:min(len(b), 4096)]); m != nil {
		return string(m[1])
	}
	return ""
}

// contentType parses Content-Type, RFC 2045 section 5.2: a missing or
// invalid one means text/plain (message/rfc822 inside a multipart/digest,
// RFC 2046 section 5.1.5).
func (w *walker) contentType(h message.Header, ctx walkCtx) (string, map[string]string) {
	def := "text/plain"
	if ctx.parent == "digest" {
		def = "message/rfc822"
	}
	v := h.Get("Content-Type")
	if strings.TrimSpace(v) == "" {
		return def, nil
	}
	mt, params := w.params(v, "Content-Type")
	if i := strings.IndexByte(mt, '/'); i <= 0 || i == len(mt)-1 {
		w.problem("Content-Type: invalid media type %q, using %s", clip(mt), def)
		mt = def
	}
	return mt, params
}

// finish chooses the text and decides which parts are inline. It runs
// even after a recovered panic, with what was collected until then.
func (w *walker) finish(body []byte) {
	p := w.p
	p.HTML = strings.TrimSpace(strings.Join(w.htmls, "\n"))
	var texts []string
	for _, t := range w.plains {
		if t = trimText(t); t != "" {
			texts = append(texts, t)
		}
	}
	p.Text = strings.Join(texts, "\n\n")
	if p.Text == "" && p.HTML != "" {
		p.Text = trimText(htmlToText(p.HTML))
	}
	if p.Text == "" && p.HTML == "" && len(p.Parts) == 0 && len(w.plains) == 0 {
		p.Text = trimText(normalizeNewlines(lossyUTF8(body)))
	}
	w.decideInline()
}

// trimText drops leading blank lines and trailing white space.
func trimText(s string) string {
	s = strings.TrimRight(s, " \t\r\n")
	for {
		i := strings.IndexByte(s, '\n')
		if i < 0 || strings.TrimSpace(s[:i]) != "" {
			return s
		}
		s = s[i+1:]
	}
}

// clip shortens a value quoted in a Problem.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
