package smtprelay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/oauth"
)

// AccountStore is what the relay needs of the accounts.
type AccountStore interface {
	Get(ctx context.Context, email string) (*accounts.Account, error)
}

// GmailOptions say how to reach Gmail's submission server.
type GmailOptions struct {
	Addr    string // smtp.gmail.com:587
	TLSMode string // starttls (default), implicit, or plain (loopback tests only)
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
	timeout  time.Duration
}

// deliver sends m as account. A rejected access token is refreshed and
// tried once more. An account whose token cannot work (revoked grant,
// undecryptable or deleted token) is errAccountUnusable; opts.Tokens has
// already recorded the revoked grant on the account.
func (g *gmailRoute) deliver(ctx context.Context, account string, m *Message) (*attempt, error) {
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
			auth: oauth.NewXOAUTH2Client(account, tok.AccessToken), timeout: g.timeout})
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
	defer c.Close()
	a := send(c, m.From, m.To, m.Data)
	for _, failed := range []map[string]error{a.perm, a.temp} {
		for _, e := range failed {
			if isDailyLimit(e) {
				return nil, errGmailQuota
			}
		}
	}
	c.Quit()
	return a, nil
}

func (g *gmailRoute) tlsMode() string {
	if g.opts.TLSMode == "" {
		return "starttls"
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
