package accounts

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/oauth"
)

const token = "1//fake-refresh-token-alice"

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newBox(t *testing.T) *oauth.Box {
	t.Helper()
	key := make([]byte, oauth.KeySize)
	rand.Read(key)
	b, err := oauth.NewBox(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestStore(t *testing.T, opts Options) (*Store, *redis.Client, *clock) {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	c := &clock{t: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)}
	if opts.Box == nil {
		opts.Box = newBox(t)
	}
	opts.Now = c.Now
	return New(rdb, opts), rdb, c
}

func mustConnect(t *testing.T, s *Store, a Account, tok string) bool {
	t.Helper()
	re, err := s.Connect(context.Background(), a, tok)
	if err != nil {
		t.Fatalf("Connect(%s) = %v", a.Email, err)
	}
	return re
}

func mustGet(t *testing.T, s *Store, email string) *Account {
	t.Helper()
	a, err := s.Get(context.Background(), email)
	if err != nil {
		t.Fatalf("Get(%s) = %v", email, err)
	}
	return a
}

func TestConnectGet(t *testing.T) {
	ctx := context.Background()
	s, rdb, clk := newTestStore(t, Options{})
	if re := mustConnect(t, s, Account{Email: " Alice@Example.COM ", ImportRecent: 50}, token); re {
		t.Fatal("first Connect reported a reconnect")
	}
	a := mustGet(t, s, "alice@example.com")
	want := Account{
		Email: "alice@example.com", Kind: KindGmail, State: StateConnected,
		ConnectedAt: clk.Now(), ImportRecent: 50, SendViaGmail: true,
	}
	if !reflect.DeepEqual(*a, want) {
		t.Fatalf("Get = %+v\nwant  %+v", *a, want)
	}

	b, _ := json.Marshal(a)
	if strings.Contains(string(b), "token") || strings.Contains(string(b), token) {
		t.Fatalf("account JSON exposes the token: %s", b)
	}
	for _, absent := range []string{"error_at", "last_poll", "warning"} {
		if strings.Contains(string(b), absent) {
			t.Errorf("account JSON has empty %q: %s", absent, b)
		}
	}

	raw, err := rdb.HGet(ctx, "mailgate:account:alice@example.com", "token").Result()
	if err != nil || raw == "" || strings.Contains(raw, token) {
		t.Fatalf("stored token field = %q, %v: want sealed bytes", raw, err)
	}
	got, err := s.RefreshToken(ctx, "ALICE@example.com")
	if err != nil || got != token {
		t.Fatalf("RefreshToken = %q, %v, want %q", got, err, token)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || !reflect.DeepEqual(*list[0], want) {
		t.Fatalf("List = %v, %v", list, err)
	}
}

func TestConnectValidates(t *testing.T) {
	s, rdb, _ := newTestStore(t, Options{})
	for _, c := range []struct {
		name string
		a    Account
		tok  string
	}{
		{"display name", Account{Email: "Alice <alice@example.com>"}, token},
		{"no domain", Account{Email: "alice"}, token},
		{"bad kind", Account{Email: "alice@example.com", Kind: "yahoo"}, token},
		{"negative import", Account{Email: "alice@example.com", ImportRecent: -1}, token},
		{"empty token", Account{Email: "alice@example.com"}, "  \n"},
	} {
		if _, err := s.Connect(context.Background(), c.a, c.tok); err == nil {
			t.Errorf("Connect(%s) succeeded, want an error", c.name)
		}
	}
	if n := rdb.DBSize(context.Background()).Val(); n != 0 {
		t.Fatalf("failed connects left %d keys", n)
	}
}

func TestReconnectKeepsProgress(t *testing.T) {
	ctx := context.Background()
	s, _, clk := newTestStore(t, Options{})
	mustConnect(t, s, Account{Email: "alice@example.com", Kind: KindWorkspace, ImportRecent: 50}, token)
	first := clk.Now()
	cur := Cursor{UIDValidity: 7, LastUID: 120}
	for _, err := range []error{
		s.SetCursor(ctx, "alice@example.com", cur),
		s.RecordPoll(ctx, "alice@example.com", 3),
		s.RecordPoll(ctx, "alice@example.com", 2),
		s.MarkImportDone(ctx, "alice@example.com"),
		s.AddQuarantined(ctx, "alice@example.com"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	polled := clk.Now()
	clk.Add(time.Hour)
	if err := s.SetError(ctx, "alice@example.com", "Google refused the token: reconnect the account", oauth.ErrInvalidGrant); err != nil {
		t.Fatal(err)
	}
	a := mustGet(t, s, "alice@example.com")
	if a.State != StateError || a.Warning != "Google refused the token: reconnect the account" ||
		a.LastError != oauth.ErrInvalidGrant.Error() || !a.ErrorAt.Equal(clk.Now()) {
		t.Fatalf("after SetError: %+v", a)
	}

	clk.Add(time.Hour)
	if re := mustConnect(t, s, Account{Email: "alice@example.com", ImportRecent: 0}, "1//new-token"); !re {
		t.Fatal("second Connect did not report a reconnect")
	}
	a = mustGet(t, s, "alice@example.com")
	want := Account{
		Email: "alice@example.com", Kind: KindWorkspace, State: StateConnected,
		ConnectedAt: first, ImportRecent: 50, ImportDone: true, LastPoll: polled,
		Imported: 5, Quarantined: 1, SendViaGmail: true,
	}
	if !reflect.DeepEqual(*a, want) {
		t.Fatalf("after reconnect Get = %+v\nwant                  %+v", *a, want)
	}
	if c, err := s.Cursor(ctx, "alice@example.com"); err != nil || c != cur {
		t.Fatalf("Cursor = %+v, %v, want %+v", c, err, cur)
	}
	if tok, _ := s.RefreshToken(ctx, "alice@example.com"); tok != "1//new-token" {
		t.Fatalf("RefreshToken = %q after reconnect", tok)
	}
}

func TestDisconnect(t *testing.T) {
	ctx := context.Background()
	s, rdb, _ := newTestStore(t, Options{})
	mustConnect(t, s, Account{Email: "alice@example.com"}, token)
	mustConnect(t, s, Account{Email: "bob@example.com"}, token)
	s.SetCursor(ctx, "alice@example.com", Cursor{UIDValidity: 1, LastUID: 9})
	if err := s.Disconnect(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}

	a := mustGet(t, s, "alice@example.com")
	if a.State != StateDisconnected || a.Warning == "" {
		t.Fatalf("after Disconnect: %+v, want disconnected with a warning", a)
	}
	if n := rdb.HExists(ctx, "mailgate:account:alice@example.com", "token").Val(); n {
		t.Fatal("Disconnect kept the token")
	}
	if _, err := s.RefreshToken(ctx, "alice@example.com"); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("RefreshToken after Disconnect = %v, want ErrDisconnected", err)
	}
	if got, _ := s.SupportAddresses(ctx); !slices.Equal(got, []string{"bob@example.com"}) {
		t.Fatalf("SupportAddresses = %v, want only bob", got)
	}
	if c, _ := s.Cursor(ctx, "alice@example.com"); c.LastUID != 9 {
		t.Fatalf("Disconnect lost the cursor: %+v", c)
	}
	// A fetcher finishing late must not put the account back into service.
	if err := s.SetError(ctx, "alice@example.com", "x", errors.New("x")); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("SetError after Disconnect = %v, want ErrDisconnected", err)
	}
	if err := s.SaveRefreshToken(ctx, "alice@example.com", "1//rotated"); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("SaveRefreshToken after Disconnect = %v, want ErrDisconnected", err)
	}
	if list, _ := s.List(ctx); len(list) != 2 {
		t.Fatalf("List after Disconnect has %d accounts, want 2", len(list))
	}
}

func TestUnknownAccount(t *testing.T) {
	ctx := context.Background()
	s, rdb, _ := newTestStore(t, Options{})
	const e = "nobody@example.com"
	if _, err := s.Get(ctx, e); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get = %v, want ErrNotFound", err)
	}
	if _, err := s.Cursor(ctx, e); !errors.Is(err, ErrNotFound) {
		t.Errorf("Cursor = %v, want ErrNotFound", err)
	}
	if _, err := s.RefreshToken(ctx, e); !errors.Is(err, ErrNotFound) {
		t.Errorf("RefreshToken = %v, want ErrNotFound", err)
	}
	for name, err := range map[string]error{
		"Disconnect":       s.Disconnect(ctx, e),
		"SetError":         s.SetError(ctx, e, "w", nil),
		"SaveRefreshToken": s.SaveRefreshToken(ctx, e, token),
		"SetCursor":        s.SetCursor(ctx, e, Cursor{1, 2}),
		"MarkImportDone":   s.MarkImportDone(ctx, e),
		"RecordPoll":       s.RecordPoll(ctx, e, 1),
		"AddQuarantined":   s.AddQuarantined(ctx, e),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s = %v, want ErrNotFound", name, err)
		}
	}
	if n := rdb.DBSize(ctx).Val(); n != 0 {
		t.Fatalf("writes for an unknown account created %d keys", n)
	}
}

func TestSealedToken(t *testing.T) {
	ctx := context.Background()
	s, rdb, _ := newTestStore(t, Options{})
	mustConnect(t, s, Account{Email: "alice@example.com"}, token)
	mustConnect(t, s, Account{Email: "mallory@example.com"}, "1//mallory")

	// Another key file: the token does not open.
	other := New(rdb, Options{Box: newBox(t)})
	if _, err := other.RefreshToken(ctx, "alice@example.com"); !errors.Is(err, oauth.ErrOpen) {
		t.Fatalf("RefreshToken with another key = %v, want oauth.ErrOpen", err)
	}
	// Alice's sealed token copied onto another account does not open there.
	sealed := rdb.HGet(ctx, "mailgate:account:alice@example.com", "token").Val()
	rdb.HSet(ctx, "mailgate:account:mallory@example.com", "token", sealed)
	if tok, err := s.RefreshToken(ctx, "mallory@example.com"); !errors.Is(err, oauth.ErrOpen) {
		t.Fatalf("RefreshToken of a copied token = %q, %v, want oauth.ErrOpen", tok, err)
	}
	// Rotation replaces it.
	if err := s.SaveRefreshToken(ctx, "alice@example.com", "1//rotated"); err != nil {
		t.Fatal(err)
	}
	if tok, _ := s.RefreshToken(ctx, "alice@example.com"); tok != "1//rotated" {
		t.Fatalf("RefreshToken after rotation = %q", tok)
	}
}

func TestSupportAddresses(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestStore(t, Options{Extra: []string{"Help@Acme.test", "bob@example.com", " "}})
	mustConnect(t, s, Account{Email: "bob@example.com"}, token)
	mustConnect(t, s, Account{Email: "alice@example.com"}, token)
	mustConnect(t, s, Account{Email: "carol@example.com"}, token)
	mustConnect(t, s, Account{Email: "dave@example.com"}, token)
	s.SetError(ctx, "carol@example.com", "revoked", oauth.ErrInvalidGrant)
	s.Disconnect(ctx, "dave@example.com")

	got, err := s.SupportAddresses(ctx)
	want := []string{"alice@example.com", "bob@example.com", "carol@example.com", "help@acme.test"}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("SupportAddresses = %v, %v, want %v", got, err, want)
	}
}

func TestChanged(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, _, _ := newTestStore(t, Options{})
	ch := s.Changed(ctx)
	wait := func(what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("no change signalled after %s", what)
		}
	}
	mustConnect(t, s, Account{Email: "alice@example.com"}, token)
	wait("Connect")
	s.RecordPoll(ctx, "alice@example.com", 1) // not a change of the account set
	s.SetError(ctx, "alice@example.com", "w", nil)
	wait("SetError")
	s.Disconnect(ctx, "alice@example.com")
	wait("Disconnect")

	cancel()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("Changed channel not closed after ctx was cancelled")
		}
	}
}

func TestAttempts(t *testing.T) {
	ctx := context.Background()
	s, rdb, _ := newTestStore(t, Options{})
	for want := 1; want <= 3; want++ {
		if n, err := s.Attempt(ctx, "Alice@example.com", "INBOX", 7, 42); err != nil || n != want {
			t.Fatalf("Attempt #%d = %d, %v", want, n, err)
		}
	}
	if n, _ := s.Attempt(ctx, "alice@example.com", "INBOX", 8, 42); n != 1 {
		t.Fatalf("Attempt under another UIDVALIDITY = %d, want 1", n)
	}
	// The Sent folder numbers its mail on its own: the same UIDVALIDITY
	// and UID there is another mail.
	if n, _ := s.Attempt(ctx, "alice@example.com", "[Gmail]/Sent Mail", 7, 42); n != 1 {
		t.Fatalf("Attempt of the same UIDVALIDITY and UID in the Sent folder = %d, want 1", n)
	}
	if _, err := s.Attempt(ctx, "alice@example.com", "", 7, 42); err == nil {
		t.Fatal("Attempt without a mailbox name succeeded")
	}
	// INBOX keeps the key it had before other folders were read, so
	// counts from before an upgrade go on; its name is case-insensitive.
	ttl := rdb.TTL(ctx, "mailgate:attempts:alice@example.com:7:42").Val()
	if ttl <= 0 || ttl > attemptsTTL {
		t.Fatalf("attempts TTL = %s, want (0, %s]", ttl, attemptsTTL)
	}
	if n, _ := s.Attempt(ctx, "alice@example.com", "inbox", 7, 42); n != 4 {
		t.Fatalf("Attempt on \"inbox\" = %d, want 4: the same folder as \"INBOX\"", n)
	}
	if err := s.ClearAttempts(ctx, "alice@example.com", "INBOX", 7, 41, 42, 43); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Attempt(ctx, "alice@example.com", "INBOX", 7, 42); n != 1 {
		t.Fatalf("Attempt after ClearAttempts = %d, want 1", n)
	}
	if n, _ := s.Attempt(ctx, "alice@example.com", "[Gmail]/Sent Mail", 7, 42); n != 2 {
		t.Fatalf("Sent folder Attempt after clearing INBOX's = %d, want 2", n)
	}
}

func TestSetSending(t *testing.T) {
	s, _, _ := newTestStore(t, Options{})
	ctx := context.Background()
	if _, err := s.Connect(ctx, Account{Email: "a@gmail.com"}, "tok"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSending(ctx, "a@gmail.com", false, "rewrite-from"); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Get(ctx, "a@gmail.com")
	if a.SendViaGmail || a.Fallback != "rewrite-from" {
		t.Errorf("after SetSending: %+v", a)
	}
	if err := s.SetSending(ctx, "a@gmail.com", true, "bogus"); err == nil {
		t.Error("bogus fallback accepted")
	}
	if err := s.SetSending(ctx, "nobody@gmail.com", true, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown account: %v", err)
	}
}
