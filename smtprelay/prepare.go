package smtprelay

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/tickets"
)

// TicketHeader lets the helpdesk say which ticket a notification is about,
// so that replies to it thread there. It is removed before sending.
const TicketHeader = "X-Mailgate-Ticket"

// prepareRead turns accepted DATA into a queue message: it adds Date and
// Message-ID when the helpdesk left them out (RFC 6409 section 8 lets a
// submission server do so), reads and strips mailgate's own headers, and
// keeps the body bytes as they came (a lone CR made CRLF, see
// normalizeCR). hd is data's header as readHeader read it for the checks
// at the end of DATA; prepareRead changes its fields. With a trace (mail
// taken over SMTP), the message gets its queue id and the relay's
// Received field here, before anything signs it.
func prepareRead(data []byte, hd header, from string, to []string, hostname string, now time.Time, tr *trace) *Message {
	m := &Message{From: from, To: append([]string(nil), to...)}
	if tr != nil {
		m.ID = newID(now)
	}
	// Before anything signs it. A lone CR in the header makes it read
	// differently, so the rare message that had one is read again.
	if norm := normalizeCR(data); len(norm) != len(data) {
		data, hd = norm, readHeader(norm)
	}
	if !hd.ok {
		// Unparseable header: send the bytes as they are.
		m.Data = data
		return m
	}
	h := hd.h
	mh := gomail.Header{Header: message.Header{Header: h}}
	if v := strings.TrimSpace(h.Get(TicketHeader)); v != "" {
		m.Ticket, _ = strconv.ParseInt(strings.TrimPrefix(v, "#"), 10, 64)
	}
	if m.Ticket == 0 {
		if subj, err := mh.Subject(); err == nil {
			m.Ticket = tickets.SubjectTicket(subj)
		}
	}
	for _, k := range []string{TicketHeader, "Bcc"} {
		// Bcc must not travel in the header (RFC 5322 section 3.6.3).
		h.Del(k)
	}
	if !h.Has("Date") {
		h.Set("Date", now.Format(time.RFC1123Z))
	}
	if id, err := mh.MessageID(); err == nil && id != "" {
		m.MessageID = id
	} else {
		m.MessageID = newMessageID(hostname, from)
		h.Set("Message-Id", "<"+m.MessageID+">")
	}
	if tr != nil {
		tr.stamp(&h, m.ID, to, now)
	}
	var out bytes.Buffer
	// Room for the fields added above, so the body is copied once.
	out.Grow(len(data) + 512)
	if err := textproto.WriteHeader(&out, h); err != nil {
		m.Data = data
		return m
	}
	out.Write(data[hd.body:])
	m.Data = out.Bytes()
	return m
}

func newMessageID(hostname, from string) string {
	var b [12]byte
	rand.Read(b[:])
	host := hostname
	if host == "" {
		if a, err := mail.ParseAddress(from); err == nil {
			_, host, _ = strings.Cut(a.Address, "@")
		}
	}
	if host == "" {
		host = "mailgate.invalid"
	}
	return hex.EncodeToString(b[:]) + "@" + host
}

// checkFrom refuses a message without an author: RFC 5322 section 3.6
// requires exactly one From field with at least one address, DKIM signs
// it and DMARC judges the mail by its domain. Mail without one is refused
// at the end of DATA, not fixed up: only the helpdesk knows who wrote it.
func checkFrom(hd header) *smtp.SMTPError {
	refuse := func(why string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message: "Message refused: " + why + "; RFC 5322 section 3.6 requires a From header field naming the author (add From: to the message)"}
	}
	if !hd.ok {
		return refuse("its header cannot be read, so it has no From header field")
	}
	h := hd.h
	switch {
	case !h.Has("From"):
		return refuse("the From header field is missing")
	case strings.TrimSpace(h.Get("From")) == "":
		return refuse("the From header field is empty")
	}
	return nil
}

// normalizeCR turns every CR that is not followed by LF into CRLF. RFC
// 5322 section 2.3 allows CR only as part of CRLF, and servers differ on
// what a lone CR is: one that takes it for a line end would read "\r.\r"
// as the end of the data and the rest as new SMTP commands (SMTP
// smuggling). As CRLF, the line is a real line, which the SMTP client then
// dot-stuffs (RFC 5321 section 4.5.2), so no server can end the data
// there. CRLF rather than dropping the CR: a lone CR was a line break to
// whoever wrote it (old Mac line ends), and dropping it would join lines.
func normalizeCR(data []byte) []byte {
	n := 0
	for i, c := range data {
		if c == '\r' && (i+1 == len(data) || data[i+1] != '\n') {
			n++
		}
	}
	if n == 0 {
		return data
	}
	out := make([]byte, 0, len(data)+n)
	for i, c := range data {
		out = append(out, c)
		if c == '\r' && (i+1 == len(data) || data[i+1] != '\n') {
			out = append(out, '\n')
		}
	}
	return out
}
