package smtprelay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strings"
	"time"

	"github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/mailparse"
)

// decision is how one try of a message, or of the recipients Gmail
// refused in it, goes out.
type decision struct {
	route   Route
	via     courier // nil for RouteDeferred: no route tries it
	from    string  // envelope sender
	data    []byte  // the bytes to send (signed, rewritten)
	reason  reason  // why not via Gmail; reasonNone (or reasonAlias) when via Gmail
	attrs   []any   // the reason's details and the policy applied, as log attributes
	account string  // RouteGmail: whose quota the message took; RouteDeferred: whose it waits for
	until   time.Time

	throttledUntil time.Time // RouteGmail: the account's throttle (past), to clear once Gmail takes its mail
}

// decide says how m, whose header is hd, goes out in this try. refused is
// reasonNone at first; when Gmail refused the account's mail during this
// same try (reasonGmailLimit, reasonAccountUnusable), decide is asked once
// more with that reason, and the account's fallback policy applies to it
// like to any other reason.
func (r *Relay) decide(ctx context.Context, m *Message, hd header, refused reason) (decision, error) {
	if m.From == "" {
		// A bounce we generate: null sender, never via an account.
		return r.direct(m, m.From, m.Data, hd.from, reasonBounce, nil), nil
	}
	acct, err := r.account(ctx, strings.ToLower(m.From))
	if errors.Is(err, accounts.ErrNotFound) {
		return r.direct(m, m.From, m.Data, hd.from, reasonNotAccount, nil), nil
	}
	if err != nil {
		return decision{}, err
	}
	why, attrs := refused, []any(nil)
	if why == reasonNone {
		if why, attrs, err = r.gmailBlock(ctx, m, hd, acct); err != nil {
			return decision{}, err
		}
	}
	if why == reasonNone {
		d := decision{route: RouteGmail, via: r.gmail.as(acct.Email), account: acct.Email, from: m.From, data: m.Data,
			throttledUntil: acct.ThrottledUntil}
		if alias := viaAlias(m, hd, acct); alias != "" {
			d.reason, d.attrs = reasonAlias, []any{"alias", alias, "account", acct.Email}
		}
		return d, nil
	}
	if why == reasonGmailThrottled {
		// As after a Gmail outage, the mail waits for the account's
		// Gmail rather than going another way (see Relay.throttled).
		return decision{route: RouteDeferred, reason: why, attrs: attrs, account: acct.Email, until: acct.ThrottledUntil}, nil
	}
	return r.fallback(ctx, m, acct, hd, why, attrs), nil
}

// account returns the account whose Gmail may send for the envelope
// sender: the account itself, or the account it is an alias of. Anything
// else is ErrNotFound.
func (r *Relay) account(ctx context.Context, sender string) (*accounts.Account, error) {
	acct, err := r.acc.Get(ctx, sender)
	if !errors.Is(err, accounts.ErrNotFound) {
		return acct, err
	}
	owner, oerr := r.acc.AliasOwner(ctx, sender)
	if oerr != nil {
		return nil, oerr
	}
	if owner == "" {
		return nil, err
	}
	return r.acc.Get(ctx, owner)
}

// viaAlias returns the alias of acct that m is sent as (its envelope
// sender or its From), "" when it is sent as the account itself.
func viaAlias(m *Message, hd header, acct *accounts.Account) string {
	for _, a := range []string{hd.from, strings.ToLower(m.From)} {
		if a != acct.Email && acct.HasAlias(a) {
			return a
		}
	}
	return ""
}

// gmailBlock says what keeps m from going via acct's Gmail now, with its
// details as log attributes, or takes one message from the account's
// quota and returns reasonNone. Gmail sends as the account, so the mail
// lands in its Sent folder, but it rewrites a From that is neither the
// account nor one of its "Send mail as" aliases (the alias shares the
// account's quota), and its daily limits are counted here so that
// mail goes another way before Gmail refuses it.
func (r *Relay) gmailBlock(ctx context.Context, m *Message, hd header, acct *accounts.Account) (reason, []any, error) {
	switch {
	case acct.State != accounts.StateConnected:
		return reasonNotConnected, []any{"state", acct.State}, nil
	case !acct.SendViaGmail:
		return reasonGmailOff, nil, nil
	case hd.from != acct.Email && !acct.HasAlias(hd.from):
		return reasonFromNotAccount, []any{"header_from", hd.from}, nil
	case realAttachment(m.Data):
		return reasonAttachment, nil, nil
	}
	l, rcpts := r.opts.Limits(acct.Kind), m.Pending()
	if l.PerMessageRcpt > 0 && len(rcpts) > l.PerMessageRcpt {
		return reasonTooManyRecipients, []any{"rcpts", len(rcpts), "max", l.PerMessageRcpt}, nil
	}
	if acct.Throttled(r.opts.Now()) {
		return reasonGmailThrottled, []any{"until", acct.ThrottledUntil, "throttle", acct.ThrottleReason}, nil
	}
	res, err := r.quota.Reserve(ctx, acct.Email, m.ID, len(rcpts), external(rcpts, acct.Email), l, r.opts.WarnAt)
	if err != nil {
		return reasonNone, nil, err
	}
	if res.warn {
		r.quotaWarning(ctx, acct.Email, res.used, l.Messages)
	}
	switch {
	case res.blocked:
		return reasonGmailLimit, nil, nil
	case !res.ok:
		return reasonOverQuota, []any{"used", res.used, "limit", l.Messages}, nil
	}
	return reasonNone, nil, nil
}

// fallback applies the account's policy to mail that cannot go via Gmail
// for why. Direct delivery passes DMARC only when we can DKIM-sign for
// the From domain, so a consumer @gmail.com account defers by default,
// while an account on a domain we hold a key for goes direct.
func (r *Relay) fallback(ctx context.Context, m *Message, acct *accounts.Account, hd header, why reason, attrs []any) decision {
	policy := acct.Fallback
	if policy == accounts.FallbackDefault {
		policy = accounts.FallbackDefer
		if r.canSign(domainOf(acct.Email)) {
			policy = accounts.FallbackDirect
		}
	}
	if policy == accounts.FallbackDefer && !why.waitHelps() {
		// Waiting for quota cannot help an attachment or a revoked
		// account: rewrite when we can, else go direct.
		policy = accounts.FallbackDirect
		if r.opts.RewriteFrom != "" && !r.canSign(domainOf(acct.Email)) {
			policy = accounts.FallbackRewriteFrom
		}
	}
	attrs = append(attrs, "fallback", policy.String())
	switch policy {
	case accounts.FallbackRewriteFrom:
		if r.opts.RewriteFrom == "" {
			attrs = append(attrs, "rewrite_from", "not done: relay.rewrite_from_address is empty, sent as is")
			return r.direct(m, m.From, m.Data, hd.from, why, attrs)
		}
		data, from := rewriteFrom(m.Data, r.opts.RewriteFrom), hd.from
		if from != "" {
			from = r.opts.RewriteFrom // rewriteFrom replaced it
		}
		attrs = append(attrs, "rewrite_from", r.opts.RewriteFrom)
		return r.direct(m, r.opts.RewriteFrom, data, from, why, attrs)
	case accounts.FallbackDefer:
		return decision{route: RouteDeferred, reason: why, attrs: attrs, account: acct.Email, until: r.quota.FreesAt(ctx, acct.Email)}
	}
	return r.direct(m, m.From, m.Data, hd.from, why, attrs)
}

// direct prepares data (m's bytes, perhaps rewritten) for delivery by the
// relay itself: DKIM-signed when a key is configured for the domain of
// hdrFrom, data's From address.
func (r *Relay) direct(m *Message, envFrom string, data []byte, hdrFrom string, why reason, attrs []any) decision {
	d := decision{route: r.ownRoute, via: r.own, from: envFrom, data: data, reason: why, attrs: attrs}
	if domain := domainOf(hdrFrom); r.canSign(domain) {
		if signed, err := r.sign(m, data, domain); err == nil {
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

// realAttachment tells a file attached to the mail from an inline image of
// its HTML: mail with a real attachment does not go through Gmail's SMTP.
// mailparse.Parts decides as the full parse does, without decoding a part,
// so even a lone text body needs no shortcut through the header hd.
func realAttachment(data []byte) bool {
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
