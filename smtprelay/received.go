package smtprelay

// This file writes the relay's trace field: the Received line RFC 5321
// section 4.4 asks of every SMTP server that accepts a message, added when
// the message is accepted, so both routes carry it and DKIM signs it.

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"
)

// trace is what the relay's Received field says of the session a message
// came in by.
type trace struct {
	hostname string     // the relay's own name (the "by" clause)
	helo     string     // the name the client gave in EHLO/HELO
	rdns     string     // the client address's reverse DNS name, "" if none
	ip       netip.Addr // the client's address
	tls      bool       // the session ran over TLS
	user     string     // the AUTH user, "" if none
	utf8     bool       // the client asked for SMTPUTF8 on MAIL
	// strip removes the Received fields the message already carries (the
	// helpdesk's internal hops) before the relay's is added.
	strip bool
}

// protocol is the "with" keyword of RFC 3848 (and RFC 6531 section 3.7.3
// for SMTPUTF8): ESMTP, plus S over TLS and A after AUTH.
func (t *trace) protocol() string {
	p := "ESMTP"
	if t.utf8 {
		p = "UTF8SMTP"
	}
	if t.tls {
		p += "S"
	}
	if t.user != "" {
		p += "A"
	}
	return p
}

// field returns the value of the relay's Received field for the message
// queued as id to rcpts. The "for" clause names the recipient only when
// there is one: with more, it would tell each of them the others.
func (t *trace) field(id string, rcpts []string, now time.Time) string {
	var b strings.Builder
	b.WriteString("from " + traceToken(t.helo) + " (")
	if t.rdns != "" {
		b.WriteString(traceToken(t.rdns) + " ")
	}
	b.WriteString("[" + t.ip.String() + "])")
	if t.user != "" {
		// A comment (RFC 5321 section 4.4 allows CFWS before "by"), as
		// Postfix writes it; it names who submitted, never a password.
		b.WriteString(" (authenticated user " + traceToken(t.user) + ")")
	}
	host := t.hostname
	if host == "" {
		host = "localhost"
	}
	b.WriteString(" by " + host + " (mailgate) with " + t.protocol() + " id " + id)
	if len(rcpts) == 1 {
		b.WriteString(" for <" + forPath(rcpts[0]) + ">")
	}
	b.WriteString("; " + now.Format(time.RFC1123Z))
	return b.String()
}

// stamp strips the earlier Received fields when asked and prepends the
// relay's own to h.
func (t *trace) stamp(h *textproto.Header, id string, rcpts []string, now time.Time) {
	if t.strip {
		h.Del("Received")
	}
	// go-message writes the field added last first: ours is on top.
	h.Add("Received", t.field(id, rcpts, now))
}

// traceToken keeps a client-given name from breaking the field's syntax:
// whitespace, parentheses, angle brackets, semicolons, control bytes and
// non-ASCII become "_"; what the client names stays readable.
func traceToken(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>;\\\"", r) {
			return '_'
		}
		return r
	}, s)
}

// forPath is the recipient as the "for" clause names it: an IDN domain
// as its A-label, so that the field stays ASCII unless the local part is
// not (the envelope checks have refused anything else odd in it).
func forPath(rcpt string) string {
	at := strings.LastIndexByte(rcpt, '@')
	return rcpt[:at+1] + asciiDomain(rcpt[at+1:])
}

// reverseName returns the first name ip's PTR records give, without its
// trailing dot, or "" when there is none or the look-up takes too long:
// the field then shows the address alone.
func reverseName(lookup func(ctx context.Context, addr string) ([]string, error), ip netip.Addr) string {
	if lookup == nil {
		lookup = net.DefaultResolver.LookupAddr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	names, err := lookup(ctx, ip.String())
	if err != nil || len(names) == 0 {
		return ""
	}
	return strings.TrimSuffix(names[0], ".")
}

// trace describes the session for the Received field of its message; the
// reverse DNS look-up is made once per connection.
func (x *session) trace() *trace {
	if x.rdns == nil {
		name := reverseName(x.s.opts.LookupAddr, x.ip)
		x.rdns = &name
	}
	_, isTLS := x.conn.TLSConnectionState()
	return &trace{hostname: x.s.opts.Hostname, helo: x.conn.Hostname(), rdns: *x.rdns, ip: x.ip,
		tls: isTLS, user: x.user, utf8: x.utf8, strip: x.s.opts.StripReceived}
}
