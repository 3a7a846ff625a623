package accounts

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/rkey"
	"github.com/mailgate/mailgate/oauth"
)

var (
	//go:embed connect.lua
	connectLua    string
	connectScript = redis.NewScript(connectLua)

	//go:embed update.lua
	updateLua    string
	updateScript = redis.NewScript(updateLua)
)

// disconnectedWarning is what `accounts list` shows for an account an admin
// disconnected, so the list says why no mail comes from it.
const disconnectedWarning = "disconnected: no mail is received from this account until it is reconnected"

// Options configure a Store. cmd/mailgate builds them from config.
type Options struct {
	// Prefix starts every key ("mailgate:"). Under Redis Cluster a prefix
	// without a hash tag is wrapped in one, as the ticket store does.
	Prefix string
	// Box seals refresh tokens at rest. Required to store or read a
	// token; listing accounts works without it.
	Box *oauth.Box
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Extra are support addresses that are not connected accounts
	// (tickets.support_addresses).
	Extra []string
}

// Store keeps accounts in Redis. It is safe for concurrent use.
//
// Keys, under the prefix: account:<email> (hash, the refresh token sealed
// in its "token" field), accounts (set of emails), lease:<email>,
// attempts:<email>:<uidvalidity>:<uid> (INBOX) and
// attempts:<email>:<mailbox>:<uidvalidity>:<uid> (other folders); changes are published on
// accounts:changed.
type Store struct {
	rdb  redis.UniversalClient
	opts Options
	p    string
}

// New returns a Store on rdb.
func New(rdb redis.UniversalClient, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = "mailgate:"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// Connect touches the account hash and the accounts set in one
	// script, so under Cluster both must share a slot.
	return &Store{rdb: rdb, opts: opts, p: rkey.Prefix(rdb, opts.Prefix)}
}

func (s *Store) accountKey(email string) string { return s.p + "account:" + email }
func (s *Store) setKey() string                 { return s.p + "accounts" }
func (s *Store) leaseKey(email string) string   { return s.p + "lease:" + email }
func (s *Store) channel() string                { return s.p + "accounts:changed" }

// attemptsKey names the attempt counter of one message. INBOX's keeps the
// name it had before other folders were read (INBOX is case-insensitive,
// RFC 3501 section 5.1), so that counts taken before an upgrade still
// count; another folder's name comes before the UIDVALIDITY. The last two
// parts are always numbers, so no folder name makes one key name another's.
func (s *Store) attemptsKey(email, mailbox string, uidValidity, uid uint32) (string, error) {
	switch {
	case mailbox == "":
		return "", fmt.Errorf("attempts of %s uid %d: no mailbox name", email, uid)
	case strings.EqualFold(mailbox, "INBOX"):
		return fmt.Sprintf("%sattempts:%s:%d:%d", s.p, email, uidValidity, uid), nil
	}
	return fmt.Sprintf("%sattempts:%s:%s:%d:%d", s.p, email, mailbox, uidValidity, uid), nil
}

func (s *Store) now() string { return s.opts.Now().UTC().Format(time.RFC3339Nano) }

// Connect adds an account or reconnects a known one, storing refreshToken
// sealed with the Box (the email is the additional data, so a sealed token
// copied to another account does not open). The account becomes connected
// and its Warning and LastError are cleared.
//
// On the first connect it records ConnectedAt, a.ImportRecent and
// a.Fallback, and SendViaGmail starts true (sending via Gmail is the
// default; a.SendViaGmail is ignored, since a zero Account must not turn
// sending off). A reconnect keeps all of those, the fetch cursor, the
// counters and ImportDone, so nothing is imported twice. a.Kind "" keeps the stored kind (gmail
// for a new account); the other fields of a are ignored.
func (s *Store) Connect(ctx context.Context, a Account, refreshToken string) (reconnected bool, err error) {
	email, err := NormalizeEmail(a.Email)
	if err != nil {
		return false, err
	}
	kind := a.Kind
	if kind != "" {
		if kind, err = ParseKind(string(kind)); err != nil {
			return false, err
		}
	}
	if !a.Fallback.valid() {
		return false, fmt.Errorf("connect %s: %w", email, errFallback(a.Fallback))
	}
	if a.ImportRecent < 0 {
		return false, fmt.Errorf("connect %s: import_recent must be 0 or more, got %d", email, a.ImportRecent)
	}
	sealed, err := s.seal(email, refreshToken)
	if err != nil {
		return false, fmt.Errorf("connect %s: %w", email, err)
	}
	n, err := connectScript.Run(ctx, s.rdb,
		[]string{s.accountKey(email), s.setKey(), s.aliasKey()},
		email, string(kind), sealed, s.now(), a.ImportRecent, "1", string(a.Fallback), s.channel(),
	).Int()
	if owner, ok := strings.CutPrefix(fmt.Sprint(err), "ALIAS "); err != nil && ok {
		return false, fmt.Errorf("connect %s: %w: it is an alias of %s (accounts set %s --remove-alias %s)", email, ErrAliasTaken, owner, owner, email)
	}
	if err != nil {
		return false, fmt.Errorf("connect %s: %w", email, err)
	}
	return n == 1, nil
}

// Get returns one account. An unknown address gives an error wrapping
// ErrNotFound.
func (s *Store) Get(ctx context.Context, email string) (*Account, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	h, err := s.rdb.HGetAll(ctx, s.accountKey(e)).Result()
	if err != nil {
		return nil, fmt.Errorf("account %s: %w", e, err)
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("account %s: %w", e, ErrNotFound)
	}
	return parseAccount(e, h), nil
}

// List returns every account ever connected, disconnected ones included,
// sorted by email.
func (s *Store) List(ctx context.Context) ([]*Account, error) {
	emails, err := s.rdb.SMembers(ctx, s.setKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	slices.Sort(emails)
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(emails))
	for i, e := range emails {
		cmds[i] = pipe.HGetAll(ctx, s.accountKey(e))
	}
	if len(emails) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("list accounts: %w", err)
		}
	}
	out := make([]*Account, 0, len(emails))
	for i, e := range emails {
		if h := cmds[i].Val(); len(h) > 0 {
			out = append(out, parseAccount(e, h))
		}
	}
	return out, nil
}

// Disconnect stops an account: state disconnected, the refresh token
// deleted, no longer a support address. The fetch cursor and counters stay
// for a later reconnect.
func (s *Store) Disconnect(ctx context.Context, email string) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	return s.update(ctx, e, "exists", true, update{
		set: []string{"state", string(StateDisconnected), "warning", disconnectedWarning, "updated_at", s.now()},
		del: []string{"token"},
	})
}

// SetError puts a connected account in state error with a warning for the
// admin (what to do, in plain words) and the underlying error. It stays a support address. An
// account an admin disconnected meanwhile is left alone (ErrDisconnected).
func (s *Store) SetError(ctx context.Context, email string, warning string, cause error) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	last := ""
	if cause != nil {
		last = cause.Error()
	}
	if warning == "" {
		warning = last
	}
	now := s.now()
	return s.update(ctx, e, "live", true, update{
		set: []string{"state", string(StateError), "warning", warning, "last_error", last, "error_at", now, "updated_at", now},
	})
}

// RefreshToken returns the account's decrypted refresh token. It fails with
// ErrNotFound, ErrDisconnected, or oauth.ErrOpen when the token does not
// open (another key file, or a token copied from another account).
func (s *Store) RefreshToken(ctx context.Context, email string) (string, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return "", err
	}
	if s.opts.Box == nil {
		return "", fmt.Errorf("refresh token of %s: no key configured (secrets.key_file)", e)
	}
	v, err := s.rdb.HMGet(ctx, s.accountKey(e), "email", "token").Result()
	if err != nil {
		return "", fmt.Errorf("refresh token of %s: %w", e, err)
	}
	if v[0] == nil {
		return "", fmt.Errorf("refresh token of %s: %w", e, ErrNotFound)
	}
	sealed, _ := v[1].(string)
	if sealed == "" {
		return "", fmt.Errorf("refresh token of %s: %w", e, ErrDisconnected)
	}
	plain, err := s.opts.Box.Open([]byte(sealed), []byte(e))
	if err != nil {
		return "", fmt.Errorf("refresh token of %s: %w (was secrets.key_file replaced? then reconnect the account)", e, err)
	}
	return string(plain), nil
}

// SaveRefreshToken replaces the stored refresh token, when the token
// endpoint rotated it. It refuses (ErrDisconnected) for an account an admin
// disconnected meanwhile.
func (s *Store) SaveRefreshToken(ctx context.Context, email, token string) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	sealed, err := s.seal(e, token)
	if err != nil {
		return fmt.Errorf("save refresh token of %s: %w", e, err)
	}
	return s.update(ctx, e, "live", false, update{set: []string{"token", sealed}})
}

// SupportAddresses returns the addresses mail is received at: accounts
// connected or in error (an errored account is still ours, which matters
// for loop detection), their aliases, and Options.Extra, lower-cased, sorted, without
// duplicates. Disconnected accounts are not included: mail to them is no
// longer the helpdesk's.
func (s *Store) SupportAddresses(ctx context.Context) ([]string, error) {
	emails, err := s.rdb.SMembers(ctx, s.setKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("support addresses: %w", err)
	}
	out := make([]string, 0, len(emails)+len(s.opts.Extra))
	if len(emails) > 0 {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, len(emails))
		for i, e := range emails {
			cmds[i] = pipe.HMGet(ctx, s.accountKey(e), "state", "aliases")
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("support addresses: %w", err)
		}
		for i, e := range emails {
			v := cmds[i].Val()
			state, _ := v[0].(string)
			aliases, _ := v[1].(string)
			switch State(state) {
			case StateConnected, StateError:
				out = append(out, e)
				out = append(out, parseAliases(aliases)...)
			}
		}
	}
	for _, x := range s.opts.Extra {
		if x = strings.ToLower(strings.TrimSpace(x)); x != "" {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Cursor returns how far fetching got; the zero Cursor when the account
// was never fetched.
func (s *Store) Cursor(ctx context.Context, email string) (Cursor, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return Cursor{}, err
	}
	v, err := s.rdb.HMGet(ctx, s.accountKey(e), "email", "uidvalidity", "last_uid").Result()
	if err != nil {
		return Cursor{}, fmt.Errorf("cursor of %s: %w", e, err)
	}
	if v[0] == nil {
		return Cursor{}, fmt.Errorf("cursor of %s: %w", e, ErrNotFound)
	}
	str := func(x any) string { s, _ := x.(string); return s }
	return Cursor{UIDValidity: parseUint32(str(v[1])), LastUID: parseUint32(str(v[2]))}, nil
}

// SetCursor records how far fetching got.
func (s *Store) SetCursor(ctx context.Context, email string, c Cursor) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	return s.update(ctx, e, "exists", false, update{set: []string{
		"uidvalidity", strconv.FormatUint(uint64(c.UIDValidity), 10),
		"last_uid", strconv.FormatUint(uint64(c.LastUID), 10),
	}})
}

// MarkImportDone records that the initial import has run, so a
// restart or reconnect never runs it again.
func (s *Store) MarkImportDone(ctx context.Context, email string) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	return s.update(ctx, e, "exists", false, update{set: []string{"import_done", "1"}})
}

// RecordPoll records a successful poll that imported n mails.
func (s *Store) RecordPoll(ctx context.Context, email string, imported int) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	return s.update(ctx, e, "exists", false, pollUpdate(s.now(), imported))
}

// AddQuarantined counts one more quarantined mail.
func (s *Store) AddQuarantined(ctx context.Context, email string) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	return s.update(ctx, e, "exists", false, update{incr: []string{"quarantined", "1"}})
}

// Changed returns a channel that receives a value after accounts are
// connected, disconnected or put in error, by this process or another one;
// bursts are coalesced into one value. The subscription is in place when
// Changed returns. The channel is closed when ctx is done. Messages sent
// while the Redis connection is down are lost, so a supervisor should also
// re-list accounts now and then (every poll interval is plenty).
func (s *Store) Changed(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	ps := s.rdb.Subscribe(ctx, s.channel())
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := ps.Receive(rctx) // the subscription confirmation
	cancel()
	if err != nil {
		// Not subscribed yet (go-redis retries); the caller should look
		// at the accounts once rather than miss a change.
		out <- struct{}{}
	}
	go func() {
		defer close(out)
		defer ps.Close()
		msgs := ps.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-msgs:
				if !ok {
					return
				}
				select {
				case out <- struct{}{}:
				default: // one pending signal is enough
				}
			}
		}
	}()
	return out
}

// update is one call of update.lua: fields to set, fields to delete,
// field/increment pairs; with ifField, only while that field is absent or
// holds a value not after ifAtMost (a string comparison).
type update struct {
	set, del, incr    []string
	ifField, ifAtMost string
}

func (s *Store) update(ctx context.Context, email, guard string, publish bool, u update) error {
	res, err := updateScript.Run(ctx, s.rdb, []string{s.accountKey(email)}, s.updateArgs(email, guard, publish, u)...).Text()
	return updateResult(email, res, err)
}

// updateArgs are update.lua's arguments.
func (s *Store) updateArgs(email, guard string, publish bool, u update) []any {
	ch := ""
	if publish {
		ch = s.channel()
	}
	args := make([]any, 0, 8+len(u.set)+len(u.del)+len(u.incr))
	args = append(args, guard, ch, email, u.ifField, u.ifAtMost, len(u.set)/2)
	for _, v := range u.set {
		args = append(args, v)
	}
	args = append(args, len(u.del))
	for _, v := range u.del {
		args = append(args, v)
	}
	args = append(args, len(u.incr)/2)
	for _, v := range u.incr {
		args = append(args, v)
	}
	return args
}

// updateResult reads update.lua's reply.
func updateResult(email, res string, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("account %s: %w", email, err)
	case res == "missing":
		return fmt.Errorf("account %s: %w", email, ErrNotFound)
	case res == "disconnected":
		return fmt.Errorf("account %s: %w", email, ErrDisconnected)
	}
	return nil
}

func (s *Store) seal(email, token string) (string, error) {
	if s.opts.Box == nil {
		return "", errors.New("no key configured to encrypt the refresh token (secrets.key_file)")
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", errors.New("empty refresh token")
	}
	return string(s.opts.Box.Seal([]byte(token), []byte(email))), nil
}

// SetSending changes how the relay sends for an account: whether it goes
// via Gmail at all (an admin who keeps hitting the daily limit turns it
// off and relies on SPF and DKIM), and its fallback policy.
func (s *Store) SetSending(ctx context.Context, email string, viaGmail bool, fallback Fallback) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	if !fallback.valid() {
		return errFallback(fallback)
	}
	via := "0"
	if viaGmail {
		via = "1"
	}
	u := update{set: []string{"send_via_gmail", via}}
	if fallback == FallbackDefault {
		u.del = []string{"fallback"}
	} else {
		u.set = append(u.set, "fallback", string(fallback))
	}
	return s.update(ctx, e, "exists", true, u)
}

func errFallback(f Fallback) error {
	return fmt.Errorf("fallback %q: want direct, rewrite-from or defer", string(f))
}
