package oauth_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/oauth"
)

const acct = "alice@example.com"

// tokenStore stands in for accounts.Store: the stored refresh token per
// account, and what the Registry recorded.
type tokenStore struct {
	mu       sync.Mutex
	refresh  map[string]string
	loadErr  error
	marks    []string // account + ": " + cause
	refreshs []string // account + " ok" or account + " " + error kind
}

func (s *tokenStore) load(_ context.Context, account string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loadErr != nil {
		return "", fmt.Errorf("refresh token of %s: %w", account, s.loadErr)
	}
	return s.refresh[account], nil
}

func (s *tokenStore) save(_ context.Context, account, refresh string) error {
	s.set(account, refresh)
	return nil
}

func (s *tokenStore) set(account, refresh string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh[account] = refresh
}

func (s *tokenStore) stored(account string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refresh[account]
}

func (s *tokenStore) mark(_ context.Context, account string, cause error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marks = append(s.marks, account+": "+cause.Error())
	return nil
}

func (s *tokenStore) onRefresh(account string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		s.refreshs = append(s.refreshs, account+" ok")
	case errors.Is(err, oauth.ErrInvalidGrant):
		s.refreshs = append(s.refreshs, account+" invalid_grant")
	default:
		s.refreshs = append(s.refreshs, account+" other")
	}
}

func (s *tokenStore) take() (marks, refreshes []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	marks, refreshes = s.marks, s.refreshs
	s.marks, s.refreshs = nil, nil
	return
}

// newRegistry returns a Registry on the fake with acct connected.
func newRegistry(t *testing.T, f *fakeoauth.Server) (*oauth.Registry, *tokenStore) {
	t.Helper()
	st := &tokenStore{refresh: map[string]string{acct: f.IssueRefreshToken(acct)}}
	r := oauth.NewRegistry(f.Config(""), oauth.RegistryOptions{
		Load: st.load, Save: st.save, MarkNeedsReconnect: st.mark, OnRefresh: st.onRefresh,
		Logger: slog.New(slog.DiscardHandler),
	})
	return r, st
}

func registryToken(t *testing.T, r *oauth.Registry) string {
	t.Helper()
	tok, err := r.Token(t.Context(), acct)
	if err != nil {
		t.Fatalf("Token(%s) = %v", acct, err)
	}
	return tok.AccessToken
}

// presented lists the refresh tokens the fake's token endpoint saw.
func presented(f *fakeoauth.Server) []string {
	var out []string
	for _, g := range f.RefreshGrants() {
		out = append(out, g.RefreshToken)
	}
	return out
}

// A refresh token rotated by one caller's refresh is the one the next
// refresh presents, whoever asks, and the access token is shared.
func TestRegistrySharesRotatedRefreshToken(t *testing.T) {
	f := newFake(t, nil)
	f.SetRotate(true)
	r, st := newRegistry(t, f)
	first := st.stored(acct)

	imap := registryToken(t, r)
	rotated := st.stored(acct)
	if rotated == first {
		t.Fatal("the rotated refresh token was not saved")
	}
	if smtp := registryToken(t, r); smtp != imap || f.TokenRequests() != 1 {
		t.Fatalf("second caller: %d token requests, same access token %v; want the first caller's token, no request", f.TokenRequests(), smtp == imap)
	}
	r.Invalidate(acct, imap) // the server rejected it
	registryToken(t, r)
	if got, want := presented(f), []string{first, rotated}; !slices.Equal(got, want) {
		t.Fatalf("token endpoint saw refresh tokens %q, want the original then the rotated one %q", got, want)
	}
	if marks, refreshes := st.take(); len(marks) != 0 || !slices.Equal(refreshes, []string{acct + " ok", acct + " ok"}) {
		t.Errorf("marks %q, refreshes %q; want none, two good refreshes", marks, refreshes)
	}
}

// A new refresh token in the store (a reconnect, by any process) replaces
// the cached Source at the next call.
func TestRegistryReconnectReplacesSource(t *testing.T) {
	f := newFake(t, nil)
	r, st := newRegistry(t, f)
	before := registryToken(t, r)

	reconnected := f.IssueRefreshToken(acct)
	st.set(acct, reconnected)
	after := registryToken(t, r)
	if after == before {
		t.Fatal("the access token of the old grant was still handed out after a reconnect")
	}
	if got := presented(f); len(got) != 2 || got[1] != reconnected {
		t.Fatalf("token endpoint saw %q, want the reconnected token last", got)
	}
}

// A revoked grant seen by many callers at once is recorded once, and asked
// about once: the dead Source answers the others itself. A reconnect then
// brings the account back.
func TestRegistryInvalidGrantMarkedOnce(t *testing.T) {
	f := newFake(t, nil)
	r, st := newRegistry(t, f)
	registryToken(t, r)
	st.take()

	f.RevokeAll(acct)
	r.Invalidate(acct, registryToken(t, r))
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { _, errs[i] = r.Token(t.Context(), acct) })
	}
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, oauth.ErrInvalidGrant) || !oauth.NeedsReconnect(err) {
			t.Fatalf("Token after revocation = %v, want invalid_grant", err)
		}
	}
	marks, refreshes := st.take()
	if len(marks) != 1 || !slices.Equal(refreshes, []string{acct + " invalid_grant"}) {
		t.Errorf("marks %q, refreshes %q; want one mark and one failed refresh", marks, refreshes)
	}
	if n := len(f.RefreshGrants()); n != 2 {
		t.Errorf("token endpoint saw %d refresh requests, want 2 (one good, one refused)", n)
	}

	st.set(acct, f.IssueRefreshToken(acct))
	registryToken(t, r)
	f.RevokeAll(acct)
	r.Invalidate(acct, registryToken(t, r))
	r.Token(t.Context(), acct)
	if marks, _ := st.take(); len(marks) != 1 {
		t.Errorf("a second revocation after a reconnect: %d marks, want 1", len(marks))
	}
}

// A stored token that no longer decrypts is recorded once, until it does.
func TestRegistryUndecryptableMarkedOnce(t *testing.T) {
	f := newFake(t, nil)
	r, st := newRegistry(t, f)
	st.loadErr = oauth.ErrOpen
	for range 3 {
		if _, err := r.Token(t.Context(), acct); !errors.Is(err, oauth.ErrOpen) || !oauth.NeedsReconnect(err) {
			t.Fatalf("Token with an undecryptable token = %v, want ErrOpen", err)
		}
	}
	if marks, _ := st.take(); len(marks) != 1 || f.TokenRequests() != 0 {
		t.Errorf("%d marks, %d token requests; want 1 mark, no request", len(marks), f.TokenRequests())
	}
	st.loadErr = nil
	registryToken(t, r)
}

// A token another caller got after the rejected one is kept.
func TestRegistryInvalidateKeepsNewerToken(t *testing.T) {
	f := newFake(t, nil)
	r, _ := newRegistry(t, f)
	tok := registryToken(t, r)
	r.Invalidate(acct, "an older token")
	r.Invalidate("nobody@example.com", tok)
	if got := registryToken(t, r); got != tok || f.TokenRequests() != 1 {
		t.Errorf("after Invalidate of another token: %d requests, want the cached token", f.TokenRequests())
	}
}
