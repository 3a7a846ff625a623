package tickets

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // registers ISO-8859-x, Windows-125x, ISO-2022-JP, GB18030, ...
	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/mailgate/mailgate/internal/oneline"
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

// Part is one non-body MIME part with its decoded bytes.
type Part struct {
	Attachment
	Data []byte `json:"-"`
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
	w.p.Parts, w.meta, w.plains, w.htmls, w.entities = nil, nil, nil, nil, 0
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
	p        *Parsed
	msg      []byte // the whole message
	plains   []string
	htmls    []string
	meta     []partMeta // parallel to p.Parts
	entities int
	seen     map[string]bool // Problems already reported

	retry   bool // go-message's multipart reader gave up: walk again
	lenient bool // walking again, with the hand-written fallbacks

	// Scratch space reused from part to part; what is kept is copied.
	raw  []byte // a part read from go-message's multipart reader
	dec  []byte // a decoded part whose input is not scratch
	rd   bytes.Reader
	br   *bufio.Reader
	body bytes.Reader // the message's body, when it is a multipart
}

// partMeta is what the inline decision needs once the HTML body is known.
type partMeta struct {
	disposition string
	inRelated   bool
}

type walkCtx struct {
	parent    string // subtype of the enclosing multipart ("mixed", "related", ...)
	inRelated bool
}

// maxProblems bounds the list: a mail with thousands of bad lines is
// malformed, and saying so a hundred times is enough.
const maxProblems = 100

func (w *walker) problem(format string, args ...any) {
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
	if r != nil {
		body = w.readAll(r)
	}
	// A text part is the body unless it says it is an attachment
	// (RFC 2183 section 2.2).
	isText := (mt == "text/plain" || mt == "text/html") && disp != "attachment"
	// Line breaks can become LF while decoding only where the charset
	// decoder is not told otherwise later: UTF-8, not ISO-2022-JP (whose
	// decoder tracks CR) or UTF-16, nor HTML whose <meta> may name one.
	lf := isText && utf8Label(params["charset"]) && (mt == "text/plain" || params["charset"] != "")
	data, owned := w.transferDecode(body, r != nil, lf, mh.Get("Content-Transfer-Encoding"), mt)
	if isText {
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
		return
	}
	if !owned {
		// data is the caller's buffer or scratch: keep neither alive nor
		// let their reuse change the part.
		data = bytes.Clone(data)
	}
	w.addPart(mh, mt, params, disp, dparams, data, ctx)
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

func (w *walker) addPart(h message.Header, mt string, params map[string]string, disp string, dparams map[string]string, data []byte, ctx walkCtx) {
	name := dparams["filename"]
	if name == "" {
		name = params["name"]
	}
	name = sanitizeFilename(name)
	if name == "" && (mt == "message/rfc822" || mt == "message/global") {
		// A forwarded message is shown under its own subject.
		if subj := w.embeddedSubject(data); subj != "" {
			name = sanitizeFilename(subj) + ".eml"
		}
	}
	if name == "" {
		name = fmt.Sprintf("attachment-%d.%s", len(w.p.Parts)+1, extension(mt))
	}
	w.p.Parts = append(w.p.Parts, Part{
		Attachment: Attachment{
			Filename:    name,
			ContentType: mt,
			Size:        int64(len(data)),
			SHA256:      sha256Hex(data),
			ContentID:   contentID(h.Get("Content-Id")),
			Inline:      disp == "inline",
		},
		Data: data,
	})
	w.meta = append(w.meta, partMeta{disposition: disp, inRelated: ctx.inRelated})
}

// embeddedSubject decodes the Subject of a message/rfc822 part. Problems
// of the embedded message are not the outer message's.
func (w *walker) embeddedSubject(data []byte) string {
	scratch := &walker{p: &Parsed{}, br: w.br}
	h, _ := scratch.readHeader(data, "")
	return oneline.Of(scratch.headerText(h.Get("Subject"), "Subject"))
}

func contentID(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "<")
	v = strings.TrimSuffix(v, ">")
	return strings.ToValidUTF8(strings.TrimSpace(v), "")
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

	// RFC 2387: a part of a multipart/related that the HTML references by
	// cid: is shown in place even without a Content-Disposition.
	var refs map[string]bool
	for i := range p.Parts {
		a := &p.Parts[i].Attachment
		m := w.meta[i]
		if a.Inline || m.disposition != "" || !m.inRelated || a.ContentID == "" {
			continue
		}
		if refs == nil {
			refs = cidRefs(p.HTML)
		}
		a.Inline = refs[strings.ToLower(a.ContentID)]
	}
}

// cidRefs returns the lower-cased Content-IDs that html refers to with
// cid: URLs (RFC 2392).
func cidRefs(html string) map[string]bool {
	refs := map[string]bool{}
	s := strings.ToLower(html)
	for {
		i := strings.Index(s, "cid:")
		if i < 0 {
			return refs
		}
		s = s[i+4:]
		end := strings.IndexAny(s, "\"'>) \t\r\n")
		if end < 0 {
			end = len(s)
		}
		if id, err := url.PathUnescape(s[:end]); err == nil {
			refs[id] = true
		}
		refs[s[:end]] = true
		s = s[end:]
	}
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

// sanitizeFilename keeps the base name only, so a stored attachment can
// never be written outside its directory, and drops control characters.
func sanitizeFilename(s string) string {
	s = oneline.Of(s)
	if i := strings.LastIndexAny(s, `/\`); i >= 0 {
		s = s[i+1:]
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if s == "." || s == ".." {
		return ""
	}
	if utf8.RuneCountInString(s) > 200 {
		s = string([]rune(s)[:200])
	}
	return s
}

// extensions names synthesised attachments. A fixed table, not
// mime.ExtensionsByType, so names do not depend on the host's mime.types.
var extensions = map[string]string{
	"application/gzip":              "gz",
	"application/json":              "json",
	"application/msword":            "doc",
	"application/octet-stream":      "bin",
	"application/pdf":               "pdf",
	"application/pgp-encrypted":     "pgp",
	"application/pgp-signature":     "asc",
	"application/pkcs7-mime":        "p7m",
	"application/pkcs7-signature":   "p7s",
	"application/rtf":               "rtf",
	"application/vnd.ms-excel":      "xls",
	"application/vnd.ms-powerpoint": "ppt",
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         "xlsx",
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   "docx",
	"application/x-pkcs7-signature":                                             "p7s",
	"application/xml":                                                           "xml",
	"application/zip":                                                           "zip",
	"audio/mpeg":                                                                "mp3",
	"image/bmp":                                                                 "bmp",
	"image/gif":                                                                 "gif",
	"image/heic":                                                                "heic",
	"image/jpeg":                                                                "jpg",
	"image/png":                                                                 "png",
	"image/svg+xml":                                                             "svg",
	"image/tiff":                                                                "tif",
	"image/webp":                                                                "webp",
	"message/delivery-status":                                                   "txt",
	"message/disposition-notification":                                          "txt",
	"message/global":                                                            "eml",
	"message/rfc822":                                                            "eml",
	"text/calendar":                                                             "ics",
	"text/csv":                                                                  "csv",
	"text/html":                                                                 "html",
	"text/plain":                                                                "txt",
	"text/rfc822-headers":                                                       "txt",
	"text/vcard":                                                                "vcf",
	"text/x-vcard":                                                              "vcf",
	"video/mp4":                                                                 "mp4",
}

func extension(mt string) string {
	if e, ok := extensions[mt]; ok {
		return e
	}
	if strings.HasPrefix(mt, "text/") {
		return "txt"
	}
	return "bin"
}
