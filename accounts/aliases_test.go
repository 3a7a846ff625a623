package accounts

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestAliases(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestStore(t, Options{Extra: []string{"extra@example.com"}})
	mustConnect(t, s, Account{Email: "alice@example.com"}, token)
	mustConnect(t, s, Account{Email: "bob@example.com"}, token)

	if err := s.SetAliases(ctx, "Alice@Example.com", []string{" Support@Example.com", "help@example.com"}, nil); err != nil {
		t.Fatal(err)
	}
	a, err := s.Get(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"help@example.com", "support@example.com"}; !slices.Equal(a.Aliases, want) {
		t.Errorf("Aliases = %v, want %v", a.Aliases, want)
	}
	if owner, _ := s.AliasOwner(ctx, "SUPPORT@example.com"); owner != "alice@example.com" {
		t.Errorf("AliasOwner(support) = %q, want alice", owner)
	}

	// One account per alias; an account's own address is no alias; bad
	// addresses are refused. Nothing changes on a refusal.
	err = s.SetAliases(ctx, "bob@example.com", []string{"sales@example.com", "support@example.com"}, nil)
	if !errors.Is(err, ErrAliasTaken) || !strings.Contains(err.Error(), "alice@example.com") {
		t.Errorf("alias of another account: err = %v, want ErrAliasTaken naming alice", err)
	}
	if owner, _ := s.AliasOwner(ctx, "sales@example.com"); owner != "" {
		t.Errorf("refused change still added sales@ to %q", owner)
	}
	if err := s.SetAliases(ctx, "bob@example.com", []string{"alice@example.com"}, nil); !errors.Is(err, ErrAliasTaken) {
		t.Errorf("an account as alias: err = %v, want ErrAliasTaken", err)
	}
	if err := s.SetAliases(ctx, "bob@example.com", []string{"Support <s@example.com>"}, nil); err == nil {
		t.Error("a display-name address was accepted as alias")
	}
	if _, err := s.Connect(ctx, Account{Email: "support@example.com"}, token); !errors.Is(err, ErrAliasTaken) {
		t.Errorf("connecting an alias as an account: err = %v, want ErrAliasTaken", err)
	}
	if err := s.SetAliases(ctx, "nobody@example.com", []string{"x@example.com"}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown account: err = %v, want ErrNotFound", err)
	}
	if err := s.SetAliases(ctx, "bob@example.com", nil, []string{"support@example.com"}); err == nil {
		t.Error("bob removed alice's alias")
	}

	// Aliases are support addresses while their account is.
	got, err := s.SupportAddresses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"alice@example.com", "bob@example.com", "extra@example.com", "help@example.com", "support@example.com"}; !slices.Equal(got, want) {
		t.Errorf("SupportAddresses = %v, want %v", got, want)
	}
	if err := s.Disconnect(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	got, _ = s.SupportAddresses(ctx)
	if slices.Contains(got, "support@example.com") {
		t.Errorf("SupportAddresses after disconnect = %v, still holds alice's alias", got)
	}

	// Removed, the alias is free for another account.
	if err := s.SetAliases(ctx, "alice@example.com", nil, []string{"support@example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAliases(ctx, "bob@example.com", []string{"support@example.com"}, nil); err != nil {
		t.Fatalf("alias freed by alice, for bob: %v", err)
	}
	list, _ := s.List(ctx)
	for _, a := range list {
		want := map[string][]string{"alice@example.com": {"help@example.com"}, "bob@example.com": {"support@example.com"}}[a.Email]
		if !slices.Equal(a.Aliases, want) {
			t.Errorf("List: %s aliases = %v, want %v", a.Email, a.Aliases, want)
		}
	}
}
