package smtprelay

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/imapfetch"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tickets"
	"github.com/mailgate/mailgate/tlsmode"
)

// withFetcher gives w a fake Gmail IMAP for gmailAcct and a fetcher that
// shares tokens with the relay, rebuilt on the same registry, as `serve`
// wires them.
func (w *relayWorld) withFetcher(tokens *oauth.Registry) *imapfetch.Fetcher {
	w.t.Helper()
	gm, err := fakegmail.New(fakegmail.Options{Validate: w.google.Validate})
	if err != nil {
		w.t.Fatal(err)
	}
	addr, err := gm.Start()
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { gm.Close() })
	gm.AddUser(gmailAcct)

	opts := w.relay.opts
	opts.Gmail.Tokens = tokens
	w.relay = NewRelay(w.q, w.acc, opts)
	st := tickets.NewStore(w.q.rdb, tickets.Options{SupportAddresses: w.acc.SupportAddresses})
	return imapfetch.New(w.acc, st, imapfetch.Options{
		IMAPAddr: addr.String(), TLSMode: tlsmode.Plain, Tokens: tokens,
		CommandTimeout: 10 * time.Second, LeaseTTL: 3 * time.Second, Holder: "test",
	})
}

func (w *relayWorld) storedToken(email string) string {
	w.t.Helper()
	tok, err := w.acc.RefreshToken(context.Background(), email)
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

// A refresh token Google rotates while the fetcher refreshes is the one the
// relay presents at its next refresh: the relay uses the fetcher's access
// token first (one source, not rebuilt), and never the dead original.
func TestRotatedRefreshTokenFromIMAPIsUsedBySMTP(t *testing.T) {
	w := newRelayWorld(t, 500)
	f := w.withFetcher(w.tokens(w.google, nil))
	w.google.SetRotate(true)
	original := w.storedToken(gmailAcct)

	if _, err := f.PollOnce(context.Background(), gmailAcct, nil); err != nil {
		t.Fatalf("PollOnce = %v", err)
	}
	rotated := w.storedToken(gmailAcct)
	if rotated == original {
		t.Fatal("the fetcher's refresh did not store the rotated refresh token")
	}

	if m := w.queueAndTry(gmailAcct, notif(gmailAcct, "one")); m.Route != RouteGmail || m.State != StateSent {
		t.Fatalf("first notification: route %s, state %s; want sent via Gmail", m.Route, m.State)
	}
	if n := w.google.TokenRequests(); n != 1 {
		t.Errorf("%d token requests after IMAP and SMTP, want 1: SMTP uses the access token IMAP got", n)
	}

	// Google stops accepting the access token: the relay must refresh,
	// with the refresh token the fetcher's refresh rotated to.
	w.google.ExpireAccessTokens()
	if m := w.queueAndTry(gmailAcct, notif(gmailAcct, "two")); m.Route != RouteGmail || m.State != StateSent {
		t.Fatalf("second notification: route %s, state %s; want sent via Gmail", m.Route, m.State)
	}
	want := []fakeoauth.RefreshGrant{{RefreshToken: original}, {RefreshToken: rotated}}
	if got := w.google.RefreshGrants(); !slices.Equal(got, want) {
		t.Errorf("token endpoint saw %+v, want the original refresh token (IMAP), then the rotated one (SMTP), both accepted", got)
	}
	if a, _ := w.acc.Get(context.Background(), gmailAcct); a.State != accounts.StateConnected || a.Warning != "" {
		t.Errorf("account %s with warning %q, want connected without one", a.State, a.Warning)
	}
}

// gate holds the first request to the token endpoint until open is closed.
type gate struct {
	once sync.Once
	open chan struct{}
}

func (g *gate) RoundTrip(r *http.Request) (*http.Response, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		select {
		case <-g.open:
		case <-time.After(10 * time.Second):
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// A revoked grant that fetching and sending both run into at once is asked
// about once and warns the admin once, in one wording.
func TestInvalidGrantSeenByBothDirectionsWarnsOnce(t *testing.T) {
	w := newRelayWorld(t, 500)
	g := &gate{open: make(chan struct{})}
	var mu sync.Mutex
	var loads, marks int
	cfg := w.google.Config("")
	// Left to guess, x/oauth2 asks twice (header, then form) whenever a
	// refresh fails; stated, each refresh is one request to count.
	cfg.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	tokens := oauth.NewRegistry(cfg, oauth.RegistryOptions{
		Load: func(ctx context.Context, account string) (string, error) {
			mu.Lock()
			if loads++; loads == 2 {
				close(g.open) // both directions are asking: let the refresh through
			}
			mu.Unlock()
			return w.acc.RefreshToken(ctx, account)
		},
		Save: w.acc.SaveRefreshToken,
		MarkNeedsReconnect: func(ctx context.Context, account string, cause error) error {
			mu.Lock()
			marks++
			mu.Unlock()
			return w.acc.MarkNeedsReconnect(ctx, account, cause)
		},
		HTTPClient: &http.Client{Transport: g},
	})
	f := w.withFetcher(tokens)
	w.google.RevokeAll(gmailAcct) // the user removed mailgate in their Google account

	m := prepare([]byte(notif(gmailAcct, "n")), gmailAcct, []string{customer}, "relay.acme.example", w.clock.t, nil)
	if err := w.q.Put(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	imapErr, smtpErr := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := f.PollOnce(context.Background(), gmailAcct, nil)
		imapErr <- err
	}()
	go func() {
		ms, err := w.q.Next(context.Background(), "test", 1, time.Second)
		if err == nil && len(ms) == 1 {
			err = w.relay.Process(context.Background(), ms[0])
		}
		smtpErr <- err
	}()
	if err := <-imapErr; !errors.Is(err, oauth.ErrInvalidGrant) {
		t.Errorf("PollOnce = %v, want invalid_grant", err)
	}
	if err := <-smtpErr; err != nil {
		t.Fatalf("relay try = %v", err)
	}

	got, err := w.q.Get(context.Background(), m.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	if got.Route == RouteGmail || len(w.gmail.Received()) != 0 {
		t.Errorf("notification went via Gmail (route %q) with a revoked grant", got.Route)
	}
	var refused int
	for _, gr := range w.google.RefreshGrants() {
		if gr.Refused {
			refused++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if refused != 1 || marks != 1 {
		t.Errorf("token endpoint refused %d refreshes, account marked %d times; want 1 and 1", refused, marks)
	}
	a, err := w.acc.Get(context.Background(), gmailAcct)
	if err != nil {
		t.Fatal(err)
	}
	if a.State != accounts.StateError || !strings.Contains(a.Warning, "invalid_grant") ||
		!strings.Contains(a.Warning, "mail is no longer fetched and notifications no longer go out via Gmail") ||
		!strings.Contains(a.Warning, "`mailgate accounts reconnect "+gmailAcct+"`") {
		t.Errorf("account %s, warning %q; want error, saying what stopped and the reconnect command", a.State, a.Warning)
	}
}
