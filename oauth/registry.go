package oauth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// markTimeout bounds the call that records a dead grant for the admin; it
// runs even when the caller's context has just ended.
const markTimeout = 30 * time.Second

// RegistryOptions say where a Registry finds and keeps refresh tokens, and
// whom it tells about refreshes and dead grants. The funcs are small so
// that this package needs no store of its own: cmd/mailgate passes the
// methods of accounts.Store.
type RegistryOptions struct {
	// Load returns the account's stored refresh token. Required. It is
	// called before each access token is handed out, so a reconnect (a new
	// token stored by any process) replaces the cached Source at once.
	Load func(ctx context.Context, account string) (string, error)
	// Save stores a refresh token the token endpoint rotated, before the
	// access token that came with it is used. Nil keeps rotated tokens in
	// memory only, which is for tests.
	Save func(ctx context.Context, account, refresh string) error
	// MarkNeedsReconnect records, once per dead refresh token, that only an
	// admin's reconnect helps: the token endpoint answered invalid_grant,
	// or the stored token does not decrypt (ErrOpen from Load). Nil: only
	// logged.
	MarkNeedsReconnect func(ctx context.Context, account string, cause error) error
	// OnRefresh is told about each request to the token endpoint, with its
	// error (nil when a new access token came back); for metrics, it must
	// not block.
	OnRefresh func(account string, err error)
	// HTTPClient talks to the token endpoint (custom CA, proxy); nil uses
	// the one in the context under oauth2.HTTPClient, else
	// http.DefaultClient.
	HTTPClient *http.Client
	// Now is the clock for access token expiry; nil means time.Now.
	Now func() time.Time
	// Logger receives one line per dead grant; nil means slog.Default().
	Logger *slog.Logger
}

// Registry keeps one Source per account, shared by everything that acts as
// the account at Google: the IMAP fetcher and the SMTP relay. Google may
// rotate the refresh token on any refresh and then rejects the old one, so
// with a Source per direction the rotation one direction saw would be lost
// to the other, which would then present a dead token. Sharing also means
// one access token per account, one place that reports refreshes, and one
// place where a dead grant is noticed and recorded for the admin.
//
// It is safe for concurrent use. Accounts are named by their normalised
// address (accounts.NormalizeEmail), the same spelling in both directions.
type Registry struct {
	cfg  *oauth2.Config
	opts RegistryOptions

	mu      sync.Mutex
	entries map[string]*entry
}

// entry is one account's Source and what the Registry knows of its
// refresh token. mu is held while the store is read or written, so a
// rotation being saved and a reconnect being noticed never cross.
type entry struct {
	mu     sync.Mutex
	src    *Source
	stored string  // the refresh token the store holds, as src last knew it
	marked *Source // the dead Source already recorded with MarkNeedsReconnect
	sealed bool    // the stored token did not decrypt, and that was recorded
}

// NewRegistry returns a Registry refreshing with cfg. opts.Load is
// required.
func NewRegistry(cfg *oauth2.Config, opts RegistryOptions) *Registry {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Registry{cfg: cfg, opts: opts, entries: make(map[string]*entry)}
}

// Token returns a valid access token for account, refreshing it if needed
// (see Source.Token). Errors from Load come back as they are (wrapped);
// errors that wrap ErrInvalidGrant or ErrOpen mean the account must be
// reconnected, and have been recorded with MarkNeedsReconnect.
func (r *Registry) Token(ctx context.Context, account string) (*oauth2.Token, error) {
	e := r.entry(account)
	for try := 0; ; try++ {
		src, err := r.current(ctx, account, e)
		if err != nil {
			return nil, err
		}
		tok, err := src.Token(ctx)
		if !errors.Is(err, ErrInvalidGrant) {
			return tok, err
		}
		// Another process may have rotated the token, or an admin
		// reconnected, between our Load and the refresh.
		if try == 0 && r.replaced(ctx, account, e, src) {
			continue
		}
		r.markDead(ctx, account, e, src, err)
		return nil, err
	}
}

// Invalidate drops account's cached access token if it is still rejected,
// after a server refused it (expired early, revoked); the next Token call
// refreshes. A newer token another caller got meanwhile is kept.
func (r *Registry) Invalidate(account, rejected string) {
	r.mu.Lock()
	e := r.entries[account]
	r.mu.Unlock()
	if e == nil {
		return
	}
	e.mu.Lock()
	src := e.src
	e.mu.Unlock()
	if src != nil {
		src.invalidate(rejected)
	}
}

// NeedsReconnect reports the failures only an admin's reconnect fixes:
// Google refused the grant (invalid_grant), or the stored refresh token no
// longer decrypts.
func NeedsReconnect(err error) bool {
	return errors.Is(err, ErrInvalidGrant) || errors.Is(err, ErrOpen)
}

func (r *Registry) entry(account string) *entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[account]
	if e == nil {
		e = new(entry)
		r.entries[account] = e
	}
	return e
}

// current returns account's Source, built anew when the stored refresh
// token is not the one the cached Source knows: a reconnect, or a rotation
// saved by another process.
func (r *Registry) current(ctx context.Context, account string, e *entry) (*Source, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	stored, err := r.opts.Load(ctx, account)
	if errors.Is(err, ErrOpen) && !e.sealed {
		e.sealed = true
		r.mark(ctx, account, err)
	}
	if err != nil {
		return nil, err
	}
	e.sealed = false
	if e.src == nil || stored != e.stored {
		r.replace(account, e, stored)
	}
	return e.src, nil
}

// replaced reloads the stored refresh token after src got invalid_grant,
// and reports whether a different Source is now in place to try.
func (r *Registry) replaced(ctx context.Context, account string, e *entry, src *Source) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.src != src {
		return true
	}
	stored, err := r.opts.Load(ctx, account)
	if err != nil || stored == e.stored {
		return false
	}
	r.replace(account, e, stored)
	return true
}

// replace puts a new Source for refresh in e. Called with e.mu held.
func (r *Registry) replace(account string, e *entry, refresh string) {
	var src *Source
	save := func(ctx context.Context, rotated string) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.src != src {
			// Replaced by a reconnect meanwhile: storing the old grant's
			// rotation would overwrite the new token.
			return nil
		}
		if r.opts.Save != nil {
			if err := r.opts.Save(ctx, account, rotated); err != nil {
				return err
			}
		}
		e.stored = rotated
		return nil
	}
	opts := []SourceOption{WithClock(r.opts.Now)}
	if r.opts.HTTPClient != nil {
		opts = append(opts, WithHTTPClient(r.opts.HTTPClient))
	}
	if r.opts.OnRefresh != nil {
		opts = append(opts, WithRefreshHook(func(err error) { r.opts.OnRefresh(account, err) }))
	}
	src = NewSource(r.cfg, refresh, save, opts...)
	e.src, e.stored = src, refresh
}

// markDead records src's invalid_grant once, however many callers (IMAP,
// SMTP) saw it.
func (r *Registry) markDead(ctx context.Context, account string, e *entry, src *Source, cause error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.src != src || e.marked == src {
		return
	}
	e.marked = src
	r.mark(ctx, account, cause)
}

// mark logs that account must be reconnected and records it with
// MarkNeedsReconnect. The record is bookkeeping for work that already
// failed, so it outlives the caller's context.
func (r *Registry) mark(ctx context.Context, account string, cause error) {
	log := r.opts.Logger.With("account", account)
	log.Error("oauth: the account must be reconnected; fetching and sending via Gmail stop until it is", "err", cause)
	if r.opts.MarkNeedsReconnect == nil {
		return
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	if err := r.opts.MarkNeedsReconnect(mctx, account, cause); err != nil {
		log.Error("oauth: could not record that the account must be reconnected", "err", err)
	}
}
