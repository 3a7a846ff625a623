package mailparse

import (
	"bufio"
	"bytes"
	netmail "net/mail"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/mailgate/mailgate/internal/oneline"
)

// readHeader splits an entity into header and body with go-message's
// textproto.ReadHeader. That reader gives up at the first line that is not
// a field (RFC 5322 section 2.2); the header is then read again by
// lenientHeader, which drops such lines. where names the entity in
// Problems; "" reports none.
func (w *walker) readHeader(raw []byte, where string) (textproto.Header, []byte) {
	br := w.bufReader(raw)
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return w.lenientHeader(raw, where)
	}
	return h, raw[len(raw)-w.rd.Len()-br.Buffered():]
}

// bufReader returns the walker's buffered reader, reading b. It is sized
// to the first header read, usually the message's: the least that
// textproto.ReadHeader needs without copying the body too.
func (w *walker) bufReader(b []byte) *bufio.Reader {
	w.rd.Reset(b)
	if w.br == nil {
		w.br = bufio.NewReaderSize(&w.rd, min(headerLen(b), 4096))
	} else {
		w.br.Reset(&w.rd)
	}
	return w.br
}

// headerLen returns the length of raw's header with the blank line that
// ends it, or len(raw) when there is none.
func headerLen(raw []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(raw[i:], '\n')
		if j < 0 {
			return len(raw)
		}
		i += j + 1
		if rest := raw[i:]; len(rest) > 0 && rest[0] == '\n' {
			return i + 1
		} else if len(rest) > 1 && rest[0] == '\r' && rest[1] == '\n' {
			return i + 2
		}
	}
}

// headers fills the fields that come from the top-level header.
func (w *walker) headers() {
	p := w.p
	h := &p.Header
	p.Subject = strings.TrimSpace(oneline.Of(w.headerText(h.Get("Subject"), "Subject")))

	if h.Has("Message-Id") {
		ids := MsgIDs(h.Get("Message-Id"))
		if len(ids) == 0 {
			w.problem("Message-ID: no msg-id in %q", clip(h.Get("Message-Id")))
		} else {
			p.MessageID = ids[0]
		}
	}
	p.InReplyTo = MsgIDs(strings.Join(h.Values("In-Reply-To"), " "))
	p.References = MsgIDs(strings.Join(h.Values("References"), " "))

	if from := w.addresses("From"); len(from) > 0 {
		p.From = from[0]
	} else {
		w.problem("From: no address")
	}
	p.To = w.addresses("To")
	p.CC = w.addresses("Cc")
	p.ReplyTo = w.addresses("Reply-To")

	if v := h.Get("Date"); v != "" {
		t, err := parseDate(v)
		if err != nil {
			w.problem("Date: cannot parse %q", clip(v))
		}
		p.Date = t
	}
}

// addresses parses an address-list field, RFC 5322 section 3.4. Mail in
// the wild breaks the grammar often enough (unbalanced quotes, ";" as a
// separator) that a failed parse falls back to picking out what looks like
// addresses, so the requester is not lost.
func (w *walker) addresses(key string) []Address {
	vals := w.p.Header.Values(key)
	if len(vals) == 0 {
		return nil
	}
	v := strings.Join(vals, ", ")
	if !utf8.ValidString(v) {
		w.problem("%s: 8-bit bytes without encoding, decoded as windows-1252", key)
		v = windows1252(v)
	}
	if strings.TrimSpace(v) == "" {
		return nil
	}
	list, err := gomail.ParseAddressList(v)
	if err != nil {
		w.problem("%s: %v; addresses extracted leniently from %q", key, err, clip(v))
		return w.lenientAddresses(v, key)
	}
	var out []Address // nil, not empty, for "undisclosed-recipients:;"
	for _, a := range list {
		out = append(out, w.address(a, key))
	}
	return out
}

func (w *walker) address(a *netmail.Address, key string) Address {
	name := a.Name
	if strings.Contains(name, "=?") {
		// net/mail leaves encoded-words inside quoted strings alone.
		name = w.decodeWords(name, key)
	}
	return Address{Name: strings.ToValidUTF8(name, "\uFFFD"), Email: strings.ToLower(a.Address)}
}

var looseAddr = regexp.MustCompile(`[^\s<>()\[\]",;:@]+@[^\s<>()\[\]",;:@]+`)

func (w *walker) lenientAddresses(v, key string) []Address {
	var out []Address
	seen := map[string]int{}
	prev := 0
	for _, m := range looseAddr.FindAllStringIndex(v, -1) {
		email := strings.ToLower(strings.TrimRight(v[m[0]:m[1]], "."))
		// The display name is what lies between the previous address and
		// this one, minus the separators, quotes and brackets around it.
		seg := strings.TrimLeft(v[prev:m[0]], " \t>,;")
		name := strings.TrimSpace(strings.Trim(strings.TrimSpace(seg), `"'<> `))
		name = w.decodeWords(name, key)
		prev = m[1]
		if i, ok := seen[email]; ok {
			if out[i].Name == "" {
				out[i].Name = name
			}
			continue
		}
		seen[email] = len(out)
		out = append(out, Address{Name: name, Email: email})
	}
	return out
}

// dateLayouts are formats seen in the wild that net/mail's RFC 5322
// parser rejects.
var dateLayouts = []string{
	time.RFC3339,
	"Mon, 2 Jan 06 15:04:05 -0700",
	"2 Jan 06 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04:05 -0700 MST",
	"Mon Jan _2 15:04:05 2006",
	"Mon Jan _2 15:04:05 -0700 2006",
	"Mon Jan _2 15:04:05 MST 2006",
	"2006-01-02 15:04:05 -0700",
	"2006-01-02 15:04:05",
	"Mon, 2 Jan 2006 15:04 -0700",
}

// rfc5322Date is the form of nearly every Date field (RFC 5322 section
// 3.3). It is tried first with the layout net/mail would end up using,
// because net/mail.ParseDate reaches it only after 24 other layouts, each
// failure an allocated error: a third of the header phase.
const rfc5322Date = "Mon, 2 Jan 2006 15:04:05 -0700"

func parseDate(v string) (time.Time, error) {
	if t, err := time.Parse(rfc5322Date, v); err == nil {
		return t, nil
	}
	t, err := netmail.ParseDate(v)
	if err == nil {
		return t, nil
	}
	s := strings.Join(strings.Fields(v), " ")
	for _, l := range dateLayouts {
		if t, e := time.Parse(l, s); e == nil {
			return t, nil
		}
	}
	return time.Time{}, err
}

// MsgIDs extracts the msg-ids of a Message-ID, In-Reply-To or
// References field (RFC 5322 section 3.6.4) without their angle brackets.
// It tolerates what real mailers send: missing brackets, commas, comments,
// phrases ("Your message of ..."), folding inside an id. Duplicates are
// dropped; order is kept.
func MsgIDs(s string) []string {
	var ids []string
	seen := map[string]bool{}
	add := func(id string) {
		if strings.ContainsAny(id, " \t\r\n") {
			id = strings.Join(strings.Fields(id), "")
		}
		id = strings.ToValidUTF8(id, "\uFFFD")
		if id == "" || seen[id] {
			return
		}
		seen[id] = true
		ids = append(ids, id)
	}
	for i := 0; i < len(s); {
		switch c := s[i]; c {
		case '(':
			i = skipComment(s, i)
		case '"':
			i = skipQuoted(s, i)
		case '<':
			j := strings.IndexAny(s[i+1:], "<>")
			switch {
			case j < 0:
				add(s[i+1:])
				i = len(s)
			case s[i+1+j] == '<': // missing '>': the next '<' starts a new id
				add(s[i+1 : i+1+j])
				i += 1 + j
			default:
				add(s[i+1 : i+1+j])
				i += j + 2
			}
		case ' ', '\t', '\r', '\n', ',', ';', '>':
			i++
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n,;<>(\"", rune(s[j])) {
				j++
			}
			if tok := s[i:j]; strings.Contains(tok, "@") {
				add(tok)
			}
			i = j
		}
	}
	return ids
}

// skipComment returns the index after the comment that starts at s[i]
// ("(" ... ")", nested, with backslash escapes).
func skipComment(s string, i int) int {
	depth := 0
	for ; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(s)
}

func skipQuoted(s string, i int) int {
	for i++; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(s)
}
