package oauth_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/oauth"
)

// clock is a settable time shared by the Source and the fake.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newFake(t *testing.T, clk *clock) *fakeoauth.Server {
	t.Helper()
	f := fakeoauth.New()
	t.Cleanup(f.Close)
	if clk != nil {
		f.SetClock(clk.Now)
	}
	return f
}

func mustToken(t *testing.T, s *oauth.Source) string {
	t.Helper()
	tok, err := s.Token(t.Context())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	return tok.AccessToken
}

func TestSourceRefreshesNearExpiry(t *testing.T) {
	clk := newClock()
	f := newFake(t, clk)
	s := oauth.NewSource(f.Config(""), f.IssueRefreshToken("alice@example.com"), nil, oauth.WithClock(clk.Now))

	first := mustToken(t, s)
	if email, ok := f.Validate(first); !ok || email != "alice@example.com" {
		t.Fatalf("Validate(first) = %q, %v", email, ok)
	}
	if got := mustToken(t, s); got != first || f.TokenRequests() != 1 {
		t.Fatalf("second Token() = new token or %d requests, want cached after 1", f.TokenRequests())
	}

	clk.Advance(58 * time.Minute) // 2 minutes left: still good
	if got := mustToken(t, s); got != first || f.TokenRequests() != 1 {
		t.Fatalf("Token() 2m before expiry refreshed (%d requests), want cached", f.TokenRequests())
	}

	clk.Advance(90 * time.Second) // 30 s left: inside the 60 s margin
	second := mustToken(t, s)
	if second == first || f.TokenRequests() != 2 {
		t.Fatalf("Token() 30s before expiry: same token or %d requests, want a refresh", f.TokenRequests())
	}
	if _, ok := f.Validate(second); !ok {
		t.Fatal("refreshed token does not validate")
	}
}

func TestSourceTokenCopyHasNoRefreshToken(t *testing.T) {
	f := newFake(t, nil)
	s := oauth.NewSource(f.Config(""), f.IssueRefreshToken("alice@example.com"), nil)
	tok, err := s.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken != "" || tok.Expiry.IsZero() || tok.Type() != "Bearer" {
		t.Fatalf("Token() = refresh %q expiry %v type %q", tok.RefreshToken, tok.Expiry, tok.Type())
	}
	if d := time.Until(tok.Expiry); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("Token().Expiry in %v, want about an hour", d)
	}
	tok.AccessToken = "mutated"
	if mustToken(t, s) == "mutated" {
		t.Fatal("caller's change leaked into the cache")
	}
}

func TestSourceRotationSavedBeforeReturn(t *testing.T) {
	f := newFake(t, nil)
	f.SetRotate(true)
	orig := f.IssueRefreshToken("alice@example.com")

	var saved []string
	save := func(ctx context.Context, newRefresh string) error {
		saved = append(saved, newRefresh)
		return nil
	}
	s := oauth.NewSource(f.Config(""), orig, save)
	mustToken(t, s)
	if len(saved) != 1 || saved[0] == orig {
		t.Fatalf("after first refresh saved = %q, want one new token", saved)
	}

	// The saved token is the live one: the original is dead, the saved works.
	if _, err := oauth.NewSource(f.Config(""), orig, nil).Token(t.Context()); !errors.Is(err, oauth.ErrInvalidGrant) {
		t.Fatalf("original refresh token after rotation: %v, want ErrInvalidGrant", err)
	}
	s.Invalidate()
	mustToken(t, s) // uses saved[0]
	if len(saved) != 2 || saved[1] == saved[0] {
		t.Fatalf("after second refresh saved = %q, want a second new token", saved)
	}
}

func TestSourceRetriesFailedSave(t *testing.T) {
	f := newFake(t, nil)
	f.SetRotate(true)
	fail := true
	var saved string
	save := func(ctx context.Context, newRefresh string) error {
		if fail {
			return errors.New("disk full")
		}
		saved = newRefresh
		return nil
	}
	s := oauth.NewSource(f.Config(""), f.IssueRefreshToken("alice@example.com"), save)
	if _, err := s.Token(t.Context()); err == nil || !strings.Contains(err.Error(), "disk full") || errors.Is(err, oauth.ErrInvalidGrant) {
		t.Fatalf("Token() with failing save = %v, want temporary save error", err)
	}
	fail = false
	mustToken(t, s)
	if saved == "" || f.TokenRequests() != 1 {
		t.Fatalf("retry: saved %q after %d token requests, want the rotated token saved without a new request", saved, f.TokenRequests())
	}
}

func TestSourceInvalidGrant(t *testing.T) {
	f := newFake(t, nil)
	refresh := f.IssueRefreshToken("alice@example.com")
	s := oauth.NewSource(f.Config(""), refresh, nil)
	mustToken(t, s)

	f.Revoke(refresh)
	s.Invalidate()
	_, err := s.Token(t.Context())
	if !errors.Is(err, oauth.ErrInvalidGrant) {
		t.Fatalf("Token() after revoke = %v, want ErrInvalidGrant", err)
	}
	if !strings.Contains(err.Error(), "Token has been expired or revoked.") {
		t.Errorf("error %q lacks Google's description", err)
	}
	if strings.Contains(err.Error(), refresh) {
		t.Errorf("error %q contains the refresh token", err)
	}
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("errors.As(RetrieveError) failed on %v", err)
	}
}

func TestSourceTemporaryErrors(t *testing.T) {
	f := newFake(t, nil)
	refresh := f.IssueRefreshToken("alice@example.com")

	badClient := f.Config("")
	badClient.ClientSecret = "wrong"
	_, err := oauth.NewSource(badClient, refresh, nil).Token(t.Context())
	if err == nil || errors.Is(err, oauth.ErrInvalidGrant) || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("wrong client secret: %v, want temporary invalid_client", err)
	}

	cfg := f.Config("")
	f.Close()
	_, err = oauth.NewSource(cfg, refresh, nil).Token(t.Context())
	if err == nil || errors.Is(err, oauth.ErrInvalidGrant) {
		t.Errorf("server down: %v, want temporary error", err)
	}
}

func TestSourceInvalidateForcesRefresh(t *testing.T) {
	f := newFake(t, nil)
	s := oauth.NewSource(f.Config(""), f.IssueRefreshToken("alice@example.com"), nil)
	first := mustToken(t, s)
	s.Invalidate()
	if second := mustToken(t, s); second == first || f.TokenRequests() != 2 {
		t.Fatalf("after Invalidate: %d token requests, want 2 and a new token", f.TokenRequests())
	}
}

func TestSourceConcurrentCallersShareOneRefresh(t *testing.T) {
	f := newFake(t, nil)
	s := oauth.NewSource(f.Config(""), f.IssueRefreshToken("alice@example.com"), nil)
	var wg sync.WaitGroup
	tokens := make([]string, 20)
	for i := range tokens {
		wg.Go(func() { tokens[i] = mustToken(t, s) })
	}
	wg.Wait()
	for _, tok := range tokens {
		if tok != tokens[0] {
			t.Fatal("concurrent callers got different tokens")
		}
	}
	if n := f.TokenRequests(); n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
}

func TestSourceWaitHonoursContext(t *testing.T) {
	// A token endpoint that hangs until the test ends.
	block := make(chan struct{})
	defer close(block)
	hang := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
		return nil, r.Context().Err()
	})}
	f := newFake(t, nil)
	s := oauth.NewSource(f.Config(""), "r", nil, oauth.WithHTTPClient(hang))

	go s.Token(context.Background()) // holds the refresh
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Token() while another refresh hangs = %v, want deadline exceeded", err)
	}
}

func TestSourceUsesHTTPClient(t *testing.T) {
	f := newFake(t, nil)
	var n atomic.Int32
	counting := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		n.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})}
	refresh := f.IssueRefreshToken("alice@example.com")

	mustToken(t, oauth.NewSource(f.Config(""), refresh, nil, oauth.WithHTTPClient(counting)))
	if n.Load() != 1 {
		t.Fatalf("WithHTTPClient: client used %d times, want 1", n.Load())
	}
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, counting)
	if _, err := oauth.NewSource(f.Config(""), refresh, nil).Token(ctx); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 2 {
		t.Fatalf("context client: used %d times, want 2", n.Load())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
