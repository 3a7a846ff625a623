package tickets

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/mailgate/mailgate/mailparse"
)

// newTicket is the ticket a mail opens if it threads onto none.
func newTicket(m *mailparse.Parsed, src Source, support map[string]bool, now time.Time) *Ticket {
	t := &Ticket{
		SupportAddress:   supportAddress(m, src, support),
		Requester:        requester(m),
		CC:               orEmpty(nonSupport(m.CC, support)),
		Subject:          m.Subject,
		Status:           StatusNew,
		CreatedAt:        now,
		UpdatedAt:        now,
		SuppressTriggers: src.SuppressTriggers,
		Tags:             append([]string{}, src.Tags...),
		Source:           src.Origin,
	}
	if t.Subject == "" {
		t.Subject = "(no subject)"
	}
	if len(m.Problems) > 0 {
		t.Tags = append(t.Tags, "malformed")
	}
	return t
}

func newComment(m *mailparse.Parsed, raw []byte, rawSHA string, truncated bool, received time.Time) *Comment {
	c := &Comment{
		Author:       requester(m),
		To:           orEmpty(m.To),
		CC:           orEmpty(m.CC),
		Subject:      m.Subject,
		Text:         m.Text,
		HTML:         m.HTML,
		MessageID:    m.MessageID,
		InReplyTo:    m.InReplyTo,
		References:   m.References,
		Date:         m.Date,
		ReceivedAt:   received,
		Attachments:  []Attachment{},
		Raw:          rawRef(rawSHA),
		RawSize:      int64(len(raw)),
		RawTruncated: truncated,
		Problems:     m.Problems,
	}
	if c.Date.IsZero() {
		// Keep the mail's own Date; only a mail without one gets the time
		// it was received.
		c.Date = received
	}
	// The digest names the blob the part's bytes are stored under, once
	// however many mails carry them.
	for _, p := range m.Parts {
		c.Attachments = append(c.Attachments, Attachment{
			Filename:    p.Filename,
			ContentType: p.ContentType,
			Size:        int64(len(p.Data)),
			SHA256:      sha256Hex(p.Data),
			ContentID:   p.ContentID,
			Inline:      p.Inline,
		})
	}
	return c
}

// requester is who the ticket is from: From, else Reply-To.
func requester(m *mailparse.Parsed) Address {
	if m.From.Email != "" || len(m.ReplyTo) == 0 {
		return m.From
	}
	return m.ReplyTo[0]
}

func supportAddress(m *mailparse.Parsed, src Source, support map[string]bool) string {
	if src.SupportAddress != "" {
		return strings.ToLower(src.SupportAddress)
	}
	for _, a := range slices.Concat(m.To, m.CC) {
		if support[a.Email] {
			return a.Email
		}
	}
	if len(m.To) > 0 {
		return m.To[0].Email
	}
	return ""
}

func nonSupport(as []Address, support map[string]bool) []Address {
	var out []Address
	for _, a := range as {
		if !support[a.Email] {
			out = append(out, a)
		}
	}
	return out
}

func orEmpty(as []Address) []Address {
	if as == nil {
		return []Address{}
	}
	return as
}

// participants are the people of a mail who may thread later replies onto
// its ticket by headers: its sender and CCs, but never a support address.
// Never nil: the ingest script reads it as a JSON array.
func participants(m *mailparse.Parsed, support map[string]bool) []string {
	out := []string{}
	for _, a := range append([]Address{requester(m)}, m.CC...) {
		if a.Email != "" && !support[a.Email] && !slices.Contains(out, a.Email) {
			out = append(out, a.Email)
		}
	}
	return out
}

// recipients are the people an agent's mail went to (To and CC), but never
// a support address: the customers it answers. Never nil.
func recipients(m *mailparse.Parsed, support map[string]bool) []string {
	out := []string{}
	for _, a := range slices.Concat(m.To, m.CC) {
		if a.Email != "" && !support[a.Email] && !slices.Contains(out, a.Email) {
			out = append(out, a.Email)
		}
	}
	return out
}

// threadRefs lists the Message-IDs a mail answers, in the order the
// threading rules try them: In-Reply-To first, then References from the
// newest (last) to the oldest (RFC 5322 section 3.6.4).
func threadRefs(m *mailparse.Parsed) (refs, kinds []string) {
	seen := map[string]bool{m.MessageID: true}
	add := func(id, kind string) {
		if id != "" && !seen[id] {
			seen[id] = true
			refs = append(refs, id)
			kinds = append(kinds, kind)
		}
	}
	for _, id := range m.InReplyTo {
		add(id, ruleInReplyTo)
	}
	for i := len(m.References) - 1; i >= 0; i-- {
		add(m.References[i], ruleReferences)
	}
	refs = limitRefs(refs)
	return refs, kinds[:len(refs)]
}

// limitRefs caps the lookups: a mail citing hundreds of ids is not worth
// hundreds of them.
func limitRefs(refs []string) []string {
	const maxRefs = 20
	return refs[:min(len(refs), maxRefs)]
}

var subjectTokenRE = regexp.MustCompile(`\[#(\d{1,18})\]`)

// SubjectTicket returns the ticket number of a "[#1042]" token in a
// subject, or 0. The relay uses it to tie a notification to its ticket.
func SubjectTicket(subject string) int64 {
	n, _ := strconv.ParseInt(subjectToken(subject), 10, 64)
	return n
}

// subjectToken returns the ticket id of a "[#1042]" token in the subject.
func subjectToken(subject string) string {
	if m := subjectTokenRE.FindStringSubmatch(subject); m != nil {
		return strings.TrimLeft(m[1], "0")
	}
	return ""
}

// dedupeKey names a mail for "was it ingested already": its Message-ID,
// which also finds the same mail fetched from another account; else, from
// Gmail, its X-GM-MSGID in the account it came from (Gmail's own name for
// one mail, whatever folder or UID it is seen under); else a hash of its
// bytes. Gmail keeps one mail per Message-ID in an account (a second
// delivery with the same Message-ID is dropped), so within an account the
// two keys agree wherever both exist.
func dedupeKey(m *mailparse.Parsed, src Source, rawSHA string) string {
	switch {
	case m.MessageID != "":
		return "id:" + m.MessageID
	case src.GmailMsgID != 0:
		return "gm:" + strings.ToLower(src.Origin) + ":" + strconv.FormatUint(src.GmailMsgID, 10)
	}
	return "sha256:" + rawSHA
}

// commentHead is a comment without its body: what a ticket event carries
// of it. Its nil Text and HTML shadow the comment's, which are left out.
type commentHead struct {
	*Comment
	Text *struct{} `json:"text,omitempty"`
	HTML *struct{} `json:"html,omitempty"`
}

// commentBody is a comment's body: the mail-sized part, stored once.
type commentBody struct {
	Text string `json:"text"`
	HTML string `json:"html,omitempty"`
}

// commentMembers are the members of c's JSON object without its braces,
// as the ingest script joins them: its head and its body.
func commentMembers(c *Comment) (head, body []byte, err error) {
	if head, err = jsonTail(commentHead{Comment: c}); err != nil {
		return nil, nil, err
	}
	if body, err = jsonTail(commentBody{Text: c.Text, HTML: c.HTML}); err != nil {
		return nil, nil, err
	}
	return head[:len(head)-1], body[:len(body)-1], nil
}

// jsonTail marshals v and drops the opening brace, so the ingest script can
// prepend the ids it assigns. It stays []byte: go-redis writes a []byte
// argument as is, so the mail-sized JSON is not copied into a string.
func jsonTail(v any) ([]byte, error) {
	// goccy/go-json produces what encoding/json does, five times faster on
	// mail bodies, which are most of every ingest's CPU. HTML bodies are
	// full of < > &: escaping them as \u003c makes the JSON (stored twice,
	// in the ticket and on the stream) much larger for no benefit to a
	// JSON consumer.
	b, err := gojson.MarshalWithOption(v, gojson.DisableHTMLEscape())
	if err != nil {
		return nil, err
	}
	if len(b) < 2 || b[0] != '{' || b[1] == '}' {
		return nil, fmt.Errorf("jsonTail: %s is not a non-empty object", b)
	}
	return b[1:], nil
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func describe(m *mailparse.Parsed, rawSHA string) string {
	if m.MessageID != "" {
		return "<" + m.MessageID + ">"
	}
	return "sha256:" + rawSHA[:12]
}
