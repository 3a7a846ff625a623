package accounts

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed aliases.lua
	aliasesLua    string
	aliasesScript = redis.NewScript(aliasesLua)
)

// ErrAliasTaken: the alias already belongs to another account, or is a
// connected account's own address. An address sends as one account only,
// or the relay could not say whose Gmail and quota its mail takes.
var ErrAliasTaken = errors.New("alias belongs to another account")

func (s *Store) aliasKey() string { return s.p + "aliases" }

// SetAliases adds and removes "Send mail as" aliases of an account: other
// addresses the account's Gmail may send as (verified in Gmail's settings)
// and receives mail for. Mail From an alias goes via the account's Gmail,
// within its quota, and each alias is a support address. Addresses are
// validated and lower-cased; all changes are made or none.
func (s *Store) SetAliases(ctx context.Context, email string, add, remove []string) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	args := []any{e, s.channel(), len(add)}
	for _, a := range add {
		n, err := NormalizeEmail(a)
		if err != nil {
			return fmt.Errorf("alias: %w", err)
		}
		args = append(args, n)
	}
	args = append(args, len(remove))
	for _, a := range remove {
		n, err := NormalizeEmail(a)
		if err != nil {
			return fmt.Errorf("alias: %w", err)
		}
		args = append(args, n)
	}
	res, err := aliasesScript.Run(ctx, s.rdb, []string{s.accountKey(e), s.aliasKey(), s.setKey()}, args...).StringSlice()
	if err != nil {
		return fmt.Errorf("aliases of %s: %w", e, err)
	}
	switch res[0] {
	case "ok":
		return nil
	case "missing":
		return fmt.Errorf("account %s: %w", e, ErrNotFound)
	case "taken":
		return fmt.Errorf("alias %s: %w %s (remove it there first: accounts set %s --remove-alias %s)", res[1], ErrAliasTaken, res[2], res[2], res[1])
	case "account":
		return fmt.Errorf("alias %s: %w: it is a connected account itself", res[1], ErrAliasTaken)
	case "absent":
		return fmt.Errorf("alias %s: not an alias of %s", res[1], e)
	}
	return fmt.Errorf("aliases of %s: unexpected reply %q", e, res[0])
}

// AliasOwner returns the account addr is an alias of, or "" when it is
// nobody's alias.
func (s *Store) AliasOwner(ctx context.Context, addr string) (string, error) {
	owner, err := s.rdb.HGet(ctx, s.aliasKey(), strings.ToLower(strings.TrimSpace(addr))).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("alias %s: %w", addr, err)
	}
	return owner, nil
}

// HasAlias reports whether addr (lower-cased) is one of a's aliases.
func (a *Account) HasAlias(addr string) bool {
	return slices.Contains(a.Aliases, addr)
}

// parseAliases reads the "aliases" field; none is nil, as in a new Account.
func parseAliases(s string) []string {
	if f := strings.Fields(s); len(f) > 0 {
		return f
	}
	return nil
}
