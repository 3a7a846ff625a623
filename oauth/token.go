package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// ErrInvalidGrant means the refresh token no longer works: the user revoked
// mailgate's access, the consent expired (7 days for apps in "testing"), or
// the password changed. Retrying cannot help; the account must be connected
// again. Every other error from Source.Token is temporary.
var ErrInvalidGrant = errors.New("oauth: refresh token expired or revoked (invalid_grant)")

// refreshMargin: an access token this close to its expiry is replaced before
// use, so it does not die between Token and the IMAP/SMTP server checking it.
const refreshMargin = 60 * time.Second

// defaultRefreshTimeout bounds one call to the token endpoint when the
// caller's context has no deadline (oauth2 would otherwise wait forever).
const defaultRefreshTimeout = 30 * time.Second

// Source hands out access tokens for one account, refreshing them with the
// stored refresh token. It is safe for concurrent use. The daemon keeps one
// per account in a Registry, shared by IMAP and SMTP, so both use one
// access token and the refresh token Google last rotated.
type Source struct {
	cfg        *oauth2.Config
	save       func(ctx context.Context, newRefresh string) error
	now        func() time.Time
	httpClient *http.Client
	onRefresh  func(err error)

	// refreshing is held by the one goroutine talking to the token
	// endpoint; a channel rather than a mutex so waiters honour ctx.
	refreshing chan struct{}

	mu      sync.Mutex
	refresh string
	access  *oauth2.Token // nil: none yet, or invalidated
	expiry  time.Time     // by s.now; zero: the server gave no lifetime
	unsaved bool          // refresh was rotated but save has not succeeded
	dead    error         // the token endpoint answered invalid_grant
}

// SourceOption configures a Source.
type SourceOption func(*Source)

// WithClock replaces time.Now, for tests that move time.
func WithClock(now func() time.Time) SourceOption {
	return func(s *Source) { s.now = now }
}

// WithHTTPClient sets the client used for the token endpoint (custom CA
// files, proxies, tests). Without it the client in the context under
// oauth2.HTTPClient is used, else http.DefaultClient.
func WithHTTPClient(c *http.Client) SourceOption {
	return func(s *Source) { s.httpClient = c }
}

// WithRefreshHook calls f after each request to the token endpoint, with
// its error (nil when a new access token came back). A request cut short
// because the caller's context ended is not reported. f must not block.
func WithRefreshHook(f func(err error)) SourceOption {
	return func(s *Source) { s.onRefresh = f }
}

// NewSource returns a Source for the account whose refresh token is refresh.
// When the token endpoint rotates the refresh token, save is called with the
// new one before Token returns, so it can be stored (encrypted) before
// anything else happens; a nil save keeps rotated tokens in memory only,
// which is for tests.
func NewSource(cfg *oauth2.Config, refresh string, save func(ctx context.Context, newRefresh string) error, opts ...SourceOption) *Source {
	s := &Source{
		cfg:        cfg,
		refresh:    refresh,
		save:       save,
		now:        time.Now,
		refreshing: make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Token returns a valid access token, refreshing it if it is missing, was
// invalidated, or expires within a minute. The returned token is a copy
// without the refresh token. Errors wrap ErrInvalidGrant when the account
// must be reconnected; anything else is temporary. Once the endpoint
// answered invalid_grant the Source is dead: later calls return that error
// without asking again, since only a new refresh token (a new Source) can
// help.
//
// If a rotated refresh token cannot be saved, Token returns the save error
// (temporary) and retries the save on the next call: running on with a
// refresh token that exists only in memory would lose the account on the
// next restart.
func (s *Source) Token(ctx context.Context) (*oauth2.Token, error) {
	if t := s.cached(); t != nil {
		return t, nil
	}

	select {
	case s.refreshing <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.refreshing }()

	if err := s.saveRotated(ctx); err != nil {
		return nil, err
	}
	// Another caller may have refreshed while we waited.
	if t := s.cached(); t != nil {
		return t, nil
	}

	s.mu.Lock()
	refresh, dead := s.refresh, s.dead
	s.mu.Unlock()
	if dead != nil {
		return nil, dead
	}

	tok, err := s.fetch(ctx, refresh)
	if s.onRefresh != nil && ctx.Err() == nil {
		s.onRefresh(err)
	}
	if err != nil {
		if errors.Is(err, ErrInvalidGrant) {
			s.mu.Lock()
			s.dead = err
			s.mu.Unlock()
		}
		return nil, err
	}

	now := s.now()
	s.mu.Lock()
	s.access = tok
	s.expiry = time.Time{}
	if tok.ExpiresIn > 0 {
		s.expiry = now.Add(time.Duration(tok.ExpiresIn) * time.Second)
	} else if !tok.Expiry.IsZero() {
		s.expiry = now.Add(tok.Expiry.Sub(time.Now()))
	}
	// oauth2 copies the old refresh token into the result when the server
	// sends none, so a difference means rotation.
	if tok.RefreshToken != "" && tok.RefreshToken != s.refresh {
		s.refresh = tok.RefreshToken
		s.unsaved = true
	}
	s.mu.Unlock()

	if err := s.saveRotated(ctx); err != nil {
		return nil, err
	}
	if t := s.cached(); t != nil {
		return t, nil
	}
	// Only when the server issued a token that is already (nearly) expired.
	return nil, errors.New("oauth: token endpoint returned an access token that expires within a minute")
}

// Invalidate drops the cached access token so the next Token call refreshes.
// Call it when a server rejected the token (it may have been revoked early).
func (s *Source) Invalidate() {
	s.mu.Lock()
	s.access = nil
	s.mu.Unlock()
}

// invalidate drops the cached access token if it is still the rejected
// one: a caller sharing the Source may have refreshed it meanwhile, and
// that newer token need not be thrown away.
func (s *Source) invalidate(rejected string) {
	s.mu.Lock()
	if s.access != nil && s.access.AccessToken == rejected {
		s.access = nil
	}
	s.mu.Unlock()
}

// cached returns a copy of the access token if it is usable and nothing is
// waiting to be saved, else nil.
func (s *Source) cached() *oauth2.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.access == nil || s.unsaved {
		return nil
	}
	if !s.expiry.IsZero() && !s.now().Before(s.expiry.Add(-refreshMargin)) {
		return nil
	}
	t := &oauth2.Token{
		AccessToken: s.access.AccessToken,
		TokenType:   s.access.TokenType,
	}
	if !s.expiry.IsZero() {
		// Expressed in wall-clock time for callers outside this package.
		t.Expiry = time.Now().Add(s.expiry.Sub(s.now()))
	}
	return t
}

// saveRotated persists a rotated refresh token if one is pending. Called
// with s.refreshing held, so only one save runs at a time.
func (s *Source) saveRotated(ctx context.Context) error {
	s.mu.Lock()
	pending, refresh := s.unsaved, s.refresh
	s.mu.Unlock()
	if !pending {
		return nil
	}
	if s.save != nil {
		if err := s.save(ctx, refresh); err != nil {
			return fmt.Errorf("oauth: save rotated refresh token: %w", err)
		}
	}
	s.mu.Lock()
	if s.refresh == refresh {
		s.unsaved = false
	}
	s.mu.Unlock()
	return nil
}

// fetch asks the token endpoint for a new access token.
func (s *Source) fetch(ctx context.Context, refresh string) (*oauth2.Token, error) {
	if s.httpClient != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, s.httpClient)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultRefreshTimeout)
		defer cancel()
	}
	// A token with no access token is never valid, so this always asks the
	// token endpoint (grant_type=refresh_token) exactly once.
	tok, err := s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: refresh}).Token()
	if err != nil {
		return nil, tokenError("refresh access token", err)
	}
	if tok.AccessToken == "" {
		return nil, errors.New("oauth: refresh access token: token endpoint returned no access token")
	}
	return tok, nil
}

// tokenError turns an error from the token endpoint into one that is safe
// to log: oauth2.RetrieveError quotes the whole response body when the
// server gave no error code, and we do not print bodies of token responses.
func tokenError(op string, err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return fmt.Errorf("oauth: %s: %w", op, err)
	}
	if re.ErrorCode == "invalid_grant" {
		desc := re.ErrorDescription
		if desc == "" {
			desc = "no description"
		}
		return &endpointError{msg: fmt.Sprintf("oauth: %s: %v: %s", op, ErrInvalidGrant, desc), sentinel: ErrInvalidGrant, re: re}
	}
	msg := fmt.Sprintf("oauth: %s: token endpoint", op)
	if re.Response != nil {
		msg += " returned " + re.Response.Status
	}
	if re.ErrorCode != "" {
		msg += ": " + re.ErrorCode
		if re.ErrorDescription != "" {
			msg += ": " + re.ErrorDescription
		}
	}
	return &endpointError{msg: msg, re: re}
}

// endpointError carries a sanitised message but still lets callers reach the
// *oauth2.RetrieveError (and ErrInvalidGrant) with errors.As / errors.Is.
type endpointError struct {
	msg      string
	sentinel error
	re       *oauth2.RetrieveError
}

func (e *endpointError) Error() string { return e.msg }

func (e *endpointError) Unwrap() []error {
	if e.sentinel != nil {
		return []error{e.sentinel, e.re}
	}
	return []error{e.re}
}
