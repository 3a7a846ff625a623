package smtprelay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tlsmode"
)

// AccountStore is what the relay needs of the accounts.
type AccountStore interface {
	Get(ctx context.Context, email string) (*accounts.Account, error)
	// AliasOwner returns the account addr is a "Send mail as" alias of,
	// "" when it is nobody's.
	AliasOwner(ctx context.Context, addr string) (string, error)
}

// GmailOptions say how to reach Gmail's submission server.
type GmailOptions struct {
	Addr    string       // smtp.gmail.com:587
	TLSMode tlsmode.Mode // tlsmode.StartTLS (default), Implicit, or Plain (loopback tests only)
	TLS     *tls.Config
	// Tokens hands out the accounts' access tokens. The daemon shares one
	// Registry with the fetcher, so a refresh token Google rotates while
	// fetching is the one sending uses next; it also reports refreshes to
	// metrics and records a revoked grant on the account, once for both
	// directions. Nil: nothing goes via Gmail.
	Tokens *oauth.Registry
}

// errGmailQuota is Gmail refusing because the account reached its daily
// sending limit: the message goes another way, it does not bounce.
var errGmailQuota = errors.New("Gmail daily sending limit reached")

// errAccountUnusable: the account cannot send via Gmail now (revoked
// token, disconnected); the message goes another way.
var errAccountUnusable = errors.New("account cannot send via Gmail")

// gmailRoute sends as the account through Gmail's SMTP with XOAUTH2, so
// the message lands in the account's Sent folder, as if the agent had
// written it in Gmail. Google de-duplicates by Message-ID, so a retry after
// an unclear failure does not leave two copies in Sent.
type gmailRoute struct {
	opts     GmailOptions
	hostname string
	timeouts Timeouts
}

// as returns the route that sends as account.
func (g *gmailRoute) as(account string) courier { return gmailSender{g: g, account: account} }

// gmailSender is the Gmail route for one account.
type gmailSender struct {
	g       *gmailRoute
	account string
}

// Deliver sends data as the account in one transaction. When Gmail will
// not take the account's mail now (refusedWhy: its daily limit, a revoked
// grant), the recipients are deferred with that error, and the relay
// decides again how they go.
func (s gmailSender) Deliver(ctx context.Context, from string, rcpts []string, data []byte) Result {
	c, err := s.g.dialAs(ctx, s.account)
	if err != nil {
		// Gmail's trouble, not the recipients': none of them bounces.
		return failAll(rcpts, asThrottled(err), Deferred)
	}
	res := send(c, from, rcpts, data, nil) // Google signs what Gmail sends
	for i, rr := range res {
		switch {
		case rr.Err != nil && isDailyLimit(rr.Err):
			res[i].Outcome, res[i].Err = Deferred, fmt.Errorf("%w: %w", errGmailQuota, rr.Err)
		case rr.Err != nil:
			if te := asThrottled(rr.Err); te != rr.Err {
				res[i].Outcome, res[i].Err = Deferred, te
			}
		}
	}
	quit(c, s.g.timeouts)
	return res
}

// refusedWhy says why err is Gmail refusing the account's mail for now,
// which another route gets around; reasonNone when it is not.
func refusedWhy(err error) reason {
	switch {
	case errors.Is(err, errGmailQuota):
		return reasonGmailLimit
	case errors.Is(err, errAccountUnusable):
		return reasonAccountUnusable
	}
	return reasonNone
}

// dialAs opens a session authenticated as account. A rejected access token
// is refreshed and tried once more. An account whose token cannot work
// (revoked grant, undecryptable or deleted token) is errAccountUnusable;
// opts.Tokens has already recorded the revoked grant on the account.
func (g *gmailRoute) dialAs(ctx context.Context, account string) (*smtp.Client, error) {
	if g.opts.Tokens == nil {
		return nil, fmt.Errorf("%w: no token registry configured", errAccountUnusable)
	}
	var c *smtp.Client
	for try := 0; ; try++ {
		tok, err := g.opts.Tokens.Token(ctx, account)
		if oauth.NeedsReconnect(err) || errors.Is(err, accounts.ErrDisconnected) || errors.Is(err, accounts.ErrNotFound) {
			return nil, fmt.Errorf("%w: %v", errAccountUnusable, err)
		}
		if err != nil {
			return nil, err // temporary: token endpoint or store unreachable
		}
		c, err = dial(ctx, dialOptions{addr: g.opts.Addr, tlsMode: g.tlsMode(), tls: g.opts.TLS, hostname: g.hostname,
			auth: oauth.NewXOAUTH2Client(account, tok.AccessToken), timeouts: g.timeouts})
		if err == nil {
			break
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code == 535 && try == 0 {
			g.opts.Tokens.Invalidate(account, tok.AccessToken)
			continue
		}
		if isDailyLimit(err) {
			return nil, errGmailQuota
		}
		return nil, err
	}
	return c, nil
}

func (g *gmailRoute) tlsMode() tlsmode.Mode {
	if g.opts.TLSMode == "" {
		return tlsmode.StartTLS
	}
	return g.opts.TLSMode
}

// isDailyLimit recognises Gmail's sending-limit replies: "550 5.4.5 Daily
// user sending limit exceeded" and the "421 4.7.0" / "550 5.7.x"
// variants that mention a limit or rate.
func isDailyLimit(err error) bool {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return false
	}
	msg := strings.ToLower(se.Message)
	ec := se.EnhancedCode
	switch {
	case ec == smtp.EnhancedCode{5, 4, 5}:
		return true
	case (ec == smtp.EnhancedCode{4, 7, 0} || ec[0] == 5 && ec[1] == 7) && (strings.Contains(msg, "limit") || strings.Contains(msg, "rate")):
		return true
	}
	return false
}
