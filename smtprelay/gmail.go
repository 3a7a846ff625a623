package smtprelay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/oauth2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tlsmode"
)

// AccountStore is what the relay needs of the accounts.
type AccountStore interface {
	Get(ctx context.Context, email string) (*accounts.Account, error)
	RefreshToken(ctx context.Context, email string) (string, error)
	SaveRefreshToken(ctx context.Context, email, token string) error
	SetError(ctx context.Context, email, warning string, cause error) error
}

// GmailOptions say how to reach Gmail's submission server.
type GmailOptions struct {
	Addr       string       // smtp.gmail.com:587
	TLSMode    tlsmode.Mode // tlsmode.StartTLS (default), Implicit, or Plain (loopback tests only)
	TLS        *tls.Config
	OAuth      *oauth2.Config
	HTTPClient *http.Client
}

// errGmailQuota is Gmail refusing because the account reached its daily
// sending limit: the message goes another way, it does not bounce.
var errGmailQuota = errors.New("Gmail daily sending limit reached")

// errAccountUnusable: the account cannot send via Gmail now (revoked
// token, disconnected); the message goes another way.
var errAccountUnusable = errors.New("account cannot send via Gmail")

// gmailRoute sends as the account through Gmail's SMTP with XOAUTH2, so
// the message lands in the account's Sent folder. Google
// de-duplicates by Message-ID, so a retry after an unclear failure does
// not leave two copies in Sent.
type gmailRoute struct {
	opts     GmailOptions
	acc      AccountStore
	hostname string
	timeout  time.Duration
	mu       sync.Mutex
	sources  map[string]*oauth.Source

	onRefresh func(account string, err error) // RelayOptions.OnTokenRefresh
	access    map[string]string               // under mu: last access token seen per account
}

// noteToken tells onRefresh about a refresh: Source.Token refreshes only
// when its access token is missing or about to expire, which shows as a
// new access token, or as an error from the token endpoint. Delivery
// workers share an account's Source, so the first to see a token counts it.
func (g *gmailRoute) noteToken(ctx context.Context, account string, tok *oauth2.Token, err error) {
	if g.onRefresh == nil {
		return
	}
	if err != nil {
		if ctx.Err() == nil {
			g.onRefresh(account, err)
		}
		return
	}
	g.mu.Lock()
	fresh := g.access[account] != tok.AccessToken
	if fresh {
		if g.access == nil {
			g.access = map[string]string{}
		}
		g.access[account] = tok.AccessToken
	}
	g.mu.Unlock()
	if fresh {
		g.onRefresh(account, nil)
	}
}

func (g *gmailRoute) source(ctx context.Context, email string) (*oauth.Source, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s, ok := g.sources[email]; ok {
		return s, nil
	}
	refresh, err := g.acc.RefreshToken(ctx, email)
	if err != nil {
		return nil, err
	}
	save := func(ctx context.Context, tok string) error { return g.acc.SaveRefreshToken(ctx, email, tok) }
	var opts []oauth.SourceOption
	if g.opts.HTTPClient != nil {
		opts = append(opts, oauth.WithHTTPClient(g.opts.HTTPClient))
	}
	s := oauth.NewSource(g.opts.OAuth, refresh, save, opts...)
	g.sources[email] = s
	return s, nil
}

// forget drops a cached token source, e.g. after a reconnect.
func (g *gmailRoute) forget(email string) {
	g.mu.Lock()
	delete(g.sources, email)
	g.mu.Unlock()
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
		return failAll(rcpts, err, Deferred)
	}
	defer c.Close()
	res := send(c, from, rcpts, data)
	for i, rr := range res {
		if rr.Err != nil && isDailyLimit(rr.Err) {
			res[i].Outcome, res[i].Err = Deferred, fmt.Errorf("%w: %w", errGmailQuota, rr.Err)
		}
	}
	c.Quit()
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
// is refreshed and tried once more; a revoked grant marks the account in
// error.
func (g *gmailRoute) dialAs(ctx context.Context, account string) (*smtp.Client, error) {
	src, err := g.source(ctx, account)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errAccountUnusable, err)
	}
	var c *smtp.Client
	for try := 0; ; try++ {
		tok, err := src.Token(ctx)
		g.noteToken(ctx, account, tok, err)
		if errors.Is(err, oauth.ErrInvalidGrant) {
			g.forget(account)
			g.acc.SetError(ctx, account, "Google revoked mailgate's access (invalid_grant): notifications go out directly until you run `mailgate accounts reconnect "+account+"`", err)
			return nil, fmt.Errorf("%w: %v", errAccountUnusable, err)
		}
		if err != nil {
			return nil, err // temporary: token endpoint unreachable
		}
		c, err = dial(ctx, dialOptions{addr: g.opts.Addr, tlsMode: g.tlsMode(), tls: g.opts.TLS, hostname: g.hostname,
			auth: oauth.NewXOAUTH2Client(account, tok.AccessToken), timeout: g.timeout})
		if err == nil {
			break
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code == 535 && try == 0 {
			src.Invalidate()
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
