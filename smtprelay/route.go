package smtprelay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/mailparse"
)

// Routes a message can take.
const (
	RouteGmail     = "gmail"     // the account's Gmail SMTP, XOAUTH2
	RouteDirect    = "direct"    // DKIM-signed, to the recipients' MX hosts
	RouteSmarthost = "smarthost" // DKIM-signed, through relay.smarthost
	routeDefer     = "defer"     // kept queued until the account's quota frees
)

// Fallback policies, per account, for mail that cannot go via Gmail.
const (
	FallbackDirect      = "direct"
	FallbackRewriteFrom = "rewrite-from"
	FallbackDefer       = "defer"
)

// decision is how one try of a message goes out.
type decision struct {
	route   string // RouteGmail, RouteDirect (or smarthost), routeDefer
	account string // for RouteGmail
	from    string // envelope sender
	data    []byte // the bytes to send (signed, rewritten)
	reason  string // why not via Gmail, for the log
	until   time.Time
	acct    *accounts.Account // for RouteGmail: to fall back if Gmail refuses
}

// header is what a try needs from the message's header, read once per try.
type header struct {
	h    textproto.Header
	ok   bool   // h was read
	from string // lower-cased address of the From field, "" if none
}

func readHeader(data []byte) header {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(data)))
	if err != nil {
		return header{}
	}
	hd := header{h: h, ok: true}
	list, err := (&gomail.Header{Header: message.Header{Header: h}}).AddressList("From")
	if err == nil && len(list) > 0 {
		hd.from = strings.ToLower(list[0].Address)
	}
	return hd
}

// route decides how m, whose header is hd, goes out now (seed G8, G10,
// G11, G12).
func (r *Relay) route(ctx context.Context, m *Message, hd header) (decision, error) {
	if m.From == "" {
		// A bounce we generate: null sender, never via an account.
		return r.direct(m, m.From, m.Data, hd.from, "bounce"), nil
	}
	acct, err := r.acc.Get(ctx, strings.ToLower(m.From))
	if errors.Is(err, accounts.ErrNotFound) {
		return r.direct(m, m.From, m.Data, hd.from, "sender is not a connected account"), nil
	}
	if err != nil {
		return decision{}, err
	}
	switch {
	case acct.State != accounts.StateConnected:
		return r.fallback(ctx, m, acct, hd, "account is "+string(acct.State))
	case !acct.SendViaGmail:
		return r.fallback(ctx, m, acct, hd, "send via Gmail is off for this account")
	}
	if hd.from != acct.Email {
		return r.fallback(ctx, m, acct, hd, fmt.Sprintf("From header %q is not the account: Gmail would rewrite it", hd.from))
	}
	if realAttachment(hd, m.Data) {
		return r.fallback(ctx, m, acct, hd, "the message has a real attachment (seed G10)")
	}
	l := r.opts.Limits(acct.Kind)
	if l.PerMessageRcpt > 0 && len(m.To) > l.PerMessageRcpt {
		return r.fallback(ctx, m, acct, hd, fmt.Sprintf("%d recipients, Gmail takes %d per message", len(m.To), l.PerMessageRcpt))
	}
	res, err := r.quota.Reserve(ctx, acct.Email, m.ID, len(m.To), external(m.To, acct.Email), l, r.opts.WarnAt)
	if err != nil {
		return decision{}, err
	}
	if res.warn {
		r.quotaWarning(ctx, acct.Email, res.used, l.Messages)
	}
	if !res.ok {
		why := fmt.Sprintf("daily Gmail quota reached (%d/%d in 24 h)", res.used, l.Messages)
		if res.blocked {
			why = "Gmail reported its daily sending limit"
		}
		return r.fallback(ctx, m, acct, hd, why)
	}
	return decision{route: RouteGmail, account: acct.Email, from: m.From, data: m.Data, acct: acct}, nil
}

// fallback applies the account's policy to mail that cannot go via Gmail.
// Direct delivery passes DMARC only when we can DKIM-sign for the From
// domain, so a consumer @gmail.com account defers by default, while an
// account on a domain we hold a key for goes direct.
func (r *Relay) fallback(ctx context.Context, m *Message, acct *accounts.Account, hd header, why string) (decision, error) {
	policy := acct.Fallback
	if policy == "" {
		policy = FallbackDefer
		if r.canSign(domainOf(acct.Email)) {
			policy = FallbackDirect
		}
	}
	if policy == FallbackDefer && !quotaReason(why) {
		// Waiting for quota cannot help an attachment or a revoked
		// account: rewrite when we can, else go direct.
		policy = FallbackDirect
		if r.opts.RewriteFrom != "" && !r.canSign(domainOf(acct.Email)) {
			policy = FallbackRewriteFrom
		}
	}
	switch policy {
	case FallbackRewriteFrom:
		if r.opts.RewriteFrom == "" {
			return r.direct(m, m.From, m.Data, hd.from, why+"; rewrite-from needs relay.rewrite_from_address, sending as is"), nil
		}
		data, from := rewriteFrom(m.Data, r.opts.RewriteFrom), hd.from
		if from != "" {
			from = r.opts.RewriteFrom // rewriteFrom replaced it
		}
		return r.direct(m, r.opts.RewriteFrom, data, from, why+"; From rewritten to "+r.opts.RewriteFrom), nil
	case FallbackDefer:
		until := r.quota.FreesAt(ctx, acct.Email)
		return decision{route: routeDefer, reason: why, until: until}, nil
	}
	return r.direct(m, m.From, m.Data, hd.from, why), nil
}

// direct prepares data (m's bytes, perhaps rewritten) for delivery by the
// relay itself: DKIM-signed when a key is configured for the domain of
// hdrFrom, data's From address.
func (r *Relay) direct(m *Message, envFrom string, data []byte, hdrFrom, why string) decision {
	d := decision{route: r.directRoute.name(), from: envFrom, data: data, reason: why}
	if r.canSign(domainOf(hdrFrom)) {
		if signed, err := r.opts.Signer.Sign(data); err == nil {
			d.data = signed
		} else {
			r.log.Warn("relay: DKIM signing failed, sending unsigned", "queue_id", m.ID, "err", err)
		}
	}
	return d
}

func (r *Relay) canSign(domain string) bool {
	return r.opts.Signer != nil && domain != "" && r.opts.Signer.CanSign(domain)
}

func quotaReason(why string) bool {
	return strings.Contains(why, "quota") || strings.Contains(why, "sending limit")
}

// realAttachment tells a file attached to the mail from an inline image of
// its HTML: mail with a real attachment does not go through Gmail's SMTP.
// mailparse.Parts decides as the full parse does, without decoding a part,
// so even a lone text body needs no shortcut through the header hd.
func realAttachment(hd header, data []byte) bool {
	for _, p := range mailparse.Parts(data) {
		if !p.Inline {
			return true
		}
	}
	return false
}

func domainOf(addr string) string {
	_, d, _ := strings.Cut(addr, "@")
	return strings.ToLower(d)
}

// external counts the recipients outside the account's domain (Workspace
// limits them separately).
func external(rcpts []string, account string) int {
	n := 0
	for _, r := range rcpts {
		if domainOf(r) != domainOf(account) {
			n++
		}
	}
	return n
}

// rewriteFrom puts the relay's own address in From and the original one in
// Reply-To, as mailing lists do so that their mail passes DMARC (RFC 7960
// section 4.1.3.3): replies still reach the account.
func rewriteFrom(data []byte, newFrom string) []byte {
	br := bufio.NewReader(bytes.NewReader(data))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return data
	}
	mh := gomail.Header{Header: message.Header{Header: h}}
	orig, _ := mh.AddressList("From")
	if len(orig) > 0 {
		if !h.Has("Reply-To") {
			mh.SetAddressList("Reply-To", orig)
		}
		name := orig[0].Name
		if name == "" {
			name = orig[0].Address
		}
		mh.SetAddressList("From", []*gomail.Address{{Name: name + " via helpdesk", Address: newFrom}})
	}
	var out bytes.Buffer
	textproto.WriteHeader(&out, mh.Header.Header)
	out.ReadFrom(br)
	return out.Bytes()
}
