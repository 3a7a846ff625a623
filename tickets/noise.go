package tickets

import (
	"bufio"
	"bytes"
	"net/textproto"
	"strings"

	"github.com/mailgate/mailgate/mailparse"
)

// Reasons a mail opens no ticket and adds no comment. Each keeps the mail's
// raw bytes and puts an event on the stream, so nothing is lost silently.
const (
	// NoiseOwnAddress: sent by one of our own support addresses, e.g. a
	// notification that came back in; ingesting it would loop.
	NoiseOwnAddress = "own-address"
	// NoiseAutoReply: an automatic reply (RFC 3834 Auto-Submitted, or the
	// de-facto X-Autoreply, X-Autorespond, Precedence headers). Answering
	// it, or letting it trigger a notification, starts a mail loop.
	NoiseAutoReply = "auto-reply"
	// NoiseBounce: a delivery status notification (RFC 3464) about a mail
	// the helpdesk sent; reported as mail.bounced on the ticket it is about.
	NoiseBounce = "bounce"
	// NoiseRateLimited: the sender went over fetch.sender_rate_limit.
	NoiseRateLimited = "rate-limited"
)

// classify returns why a mail must not become a ticket or comment, or "".
// Bounces are checked first: they are often Auto-Submitted too, and the
// bounce is the more useful thing to report.
func classify(m *mailparse.Parsed, support map[string]bool) string {
	switch {
	case isBounce(m):
		return NoiseBounce
	case isAutoReply(m):
		return NoiseAutoReply
	case m.From.Email != "" && support[m.From.Email]:
		return NoiseOwnAddress
	}
	return ""
}

func isBounce(m *mailparse.Parsed) bool {
	ct := strings.ToLower(m.Header.Get("Content-Type"))
	if strings.HasPrefix(ct, "multipart/report") && strings.Contains(ct, "delivery-status") {
		return true
	}
	local, _, _ := strings.Cut(m.From.Email, "@")
	return local == "mailer-daemon" || (local == "postmaster" && strings.Contains(strings.ToLower(m.Subject), "deliver"))
}

func isAutoReply(m *mailparse.Parsed) bool {
	h := m.Header
	// RFC 3834 section 5: any value other than "no" marks an automatic mail.
	if v := strings.ToLower(strings.TrimSpace(h.Get("Auto-Submitted"))); v != "" && !strings.HasPrefix(v, "no") {
		return true
	}
	if h.Get("X-Autoreply") != "" || h.Get("X-Autorespond") != "" || h.Get("X-Autoresponse") != "" {
		return true
	}
	switch strings.ToLower(strings.TrimSpace(h.Get("Precedence"))) {
	case "auto_reply", "bulk", "junk":
		return true
	}
	return false
}

// bounceRefs are the Message-IDs a bounce is about: its own In-Reply-To
// and References, then the Message-ID of the returned message or headers
// (RFC 3464 section 2: message/rfc822 or text/rfc822-headers part).
func bounceRefs(m *mailparse.Parsed) []string {
	refs := append(append([]string{}, m.InReplyTo...), m.References...)
	for _, p := range m.Parts {
		ct := strings.ToLower(p.ContentType)
		if ct != "message/rfc822" && ct != "text/rfc822-headers" && ct != "message/global" {
			continue
		}
		r := textproto.NewReader(bufio.NewReader(bytes.NewReader(p.Data)))
		if h, err := r.ReadMIMEHeader(); err == nil || len(h) > 0 {
			refs = append(refs, mailparse.MsgIDs(h.Get("Message-Id"))...)
		}
	}
	return refs
}
