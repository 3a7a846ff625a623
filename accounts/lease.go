package accounts

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/proclive"
)

var (
	//go:embed lease.lua
	leaseLua    string
	leaseScript = redis.NewScript(leaseLua)

	// Compare-and-set on the value, so that a holder whose lease expired
	// and was taken over cannot delete the new holder's lease.
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)
)

// Holder is the owner of an account's polling lease: a fetcher. The token
// tells owners apart (it is random per fetcher), so an owner recognises its
// own lease after a reconnect or a Redis restart; host and pid say which
// process it is, to people and to the liveness check. It is stored as
// host:pid:token.
type Holder struct {
	Host  string
	PID   int
	Token string
}

// NewHolder names a fetcher of this process; an empty token gets a random
// one.
func NewHolder(token string) Holder {
	if token == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		token = hex.EncodeToString(b[:])
	}
	return Holder{Host: proclive.Host(), PID: os.Getpid(), Token: token}
}

// valid says whether h can be stored and read back: host:pid:token with a
// host without colons, a pid and a token.
func (h Holder) valid() error {
	if h.Token == "" || h.PID <= 0 || strings.Contains(h.Host, ":") {
		return fmt.Errorf("holder %q is not host:pid:token", h)
	}
	return nil
}

// String is the stored value, host:pid:token.
func (h Holder) String() string {
	return h.Host + ":" + strconv.Itoa(h.PID) + ":" + h.Token
}

// Process is host:pid, the holder as an admin finds it with ps.
func (h Holder) Process() string {
	if h.PID <= 0 {
		return h.Host // not written by NewHolder: show it whole
	}
	return h.Host + ":" + strconv.Itoa(h.PID)
}

// parseHolder reads a stored value. Host names hold no colon, so the first
// two colons split it; the token may contain any. A value not in this
// form is kept whole as the host, with pid 0, which is never proved dead.
func parseHolder(v string) Holder {
	parts := strings.SplitN(v, ":", 3)
	if len(parts) >= 2 {
		if pid, err := strconv.Atoi(parts[1]); err == nil && pid > 0 {
			h := Holder{Host: parts[0], PID: pid}
			if len(parts) == 3 {
				h.Token = parts[2]
			}
			return h
		}
	}
	return Holder{Host: v}
}

// Liveness is what this process can tell of a lease holder's process.
type Liveness int

const (
	// Unknown: the holder runs on another host (or its host is unknown);
	// only the lease's expiry can tell that it is gone.
	Unknown Liveness = iota
	// Alive: a process with the holder's pid runs on this host. It may be
	// another program that got the pid since: that costs a wait for the
	// expiry, never a second poller.
	Alive
	// Gone: no process with the holder's pid exists on this host.
	Gone
)

func (l Liveness) String() string {
	switch l {
	case Alive:
		return "alive"
	case Gone:
		return "process gone"
	default:
		return "on another host"
	}
}

// Liveness checks the holder's process, when it ran on this host: the host
// name is what says so, so two machines (or containers with their own pid
// namespaces) that share a Redis must not share a host name.
func (h Holder) Liveness() Liveness {
	switch {
	case h.Host == "" || h.Host != proclive.Host() || h.PID <= 0:
		return Unknown
	case proclive.Gone(h.Host, h.PID):
		return Gone
	default:
		return Alive
	}
}

// Lease is an account's polling lease as one call found it.
type Lease struct {
	// Holder holds it now: the caller when Mine.
	Holder Holder
	// Mine says the caller holds the lease now.
	Mine bool
	// Until is when it runs out unless its holder renews it; zero for a
	// lease without expiry (set by hand).
	Until time.Time
	// Liveness is what this process could tell of Holder's process; Alive
	// when Mine.
	Liveness Liveness
	// TookOver is the holder whose lease the call took over because its
	// process was gone; zero if none.
	TookOver Holder
}

// String says who holds the lease and until when, for logs and the CLI:
// "mx1:4242 (alive) until 15:04:05", in local time.
func (l Lease) String() string {
	until := "without expiry"
	if !l.Until.IsZero() {
		until = "until " + l.Until.Local().Format(time.TimeOnly)
	}
	return fmt.Sprintf("%s (%s) %s", l.Holder.Process(), l.Liveness, until)
}

// AcquireLease takes the account's polling lease for me for ttl, or
// extends it if me holds it already, so two mailgate processes on one Redis
// never poll the same mailbox. A renewal is the same call: it also takes a
// lease that is missing (Redis restarted or failed over without it), and
// a lease me held before a reconnect or a release that failed is still
// me's. A lease whose holder was a process on this host that no longer
// exists is taken over at once; any other holder keeps it until it
// expires, and the returned Lease says who that is and until when.
func (s *Store) AcquireLease(ctx context.Context, email string, me Holder, ttl time.Duration) (Lease, error) {
	e, err := leaseArgs(email, me, ttl)
	if err != nil {
		return Lease{}, err
	}
	l, held, err := s.claimLease(ctx, e, me, ttl, "")
	if err != nil || l.Mine {
		return l, err
	}
	if l.Liveness = l.Holder.Liveness(); l.Liveness != Gone {
		return l, nil
	}
	// The dead holder's value is compared again in the script: if someone
	// else took the lease in between, theirs is kept.
	dead := l.Holder
	if l, _, err = s.claimLease(ctx, e, me, ttl, held); err != nil {
		return l, err
	}
	if l.Mine {
		l.TookOver = dead
	} else {
		l.Liveness = l.Holder.Liveness()
	}
	return l, nil
}

// claimLease runs lease.lua once, replacing the value dead if the lease
// still holds it. It returns the lease and its stored value.
func (s *Store) claimLease(ctx context.Context, e string, me Holder, ttl time.Duration, dead string) (Lease, string, error) {
	now := s.opts.Now()
	res, err := leaseScript.Run(ctx, s.rdb, []string{s.leaseKey(e)}, me.String(), ttl.Milliseconds(), dead).Slice()
	if err != nil {
		return Lease{}, "", fmt.Errorf("lease of %s: %w", e, err)
	}
	return leaseReply(e, res, me, now)
}

// leaseReply reads lease.lua's reply {mine, value, milliseconds left}.
func leaseReply(e string, res []any, me Holder, now time.Time) (Lease, string, error) {
	if len(res) != 3 {
		return Lease{}, "", fmt.Errorf("lease of %s: script returned %d values", e, len(res))
	}
	mine, _ := res[0].(int64)
	value, _ := res[1].(string)
	ms, _ := res[2].(int64)
	l := Lease{Holder: parseHolder(value), Mine: mine == 1}
	if l.Mine {
		l.Holder, l.Liveness = me, Alive
	}
	if ms > 0 {
		l.Until = now.Add(time.Duration(ms) * time.Millisecond)
	}
	return l, value, nil
}

// ReleaseLease gives me's lease up, so another process can take over at
// once; it does nothing if me no longer has it. A release that fails
// leaves the lease to expire, or to me's next AcquireLease.
func (s *Store) ReleaseLease(ctx context.Context, email string, me Holder) error {
	e, err := leaseArgs(email, me, time.Millisecond)
	if err != nil {
		return err
	}
	if err := releaseScript.Run(ctx, s.rdb, []string{s.leaseKey(e)}, me.String()).Err(); err != nil {
		return fmt.Errorf("release lease of %s: %w", e, err)
	}
	return nil
}

func leaseArgs(email string, me Holder, ttl time.Duration) (string, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return "", err
	}
	if err := me.valid(); err != nil {
		return "", fmt.Errorf("lease of %s: %w", e, err)
	}
	if ttl < time.Millisecond {
		return "", fmt.Errorf("lease of %s: ttl %s is under a millisecond", e, ttl)
	}
	return e, nil
}

// attemptsTTL: an attempt counter outlives any sane retry schedule, yet a
// mailbox that is never fetched again does not leave keys forever. Each
// attempt restarts it.
const attemptsTTL = 72 * time.Hour

// Attempt counts one more ingest attempt of the message uid of mailbox
// (poison-mail accounting) and returns the count including this one. The
// fetcher quarantines the message once it reaches fetch.max_attempts.
// mailbox is the folder's name on the server ("INBOX", "[Gmail]/Sent
// Mail"): a UID is unique only within one mailbox and UIDVALIDITY (RFC 3501
// section 2.3.1.1), and two folders may well share a UIDVALIDITY.
func (s *Store) Attempt(ctx context.Context, email, mailbox string, uidValidity, uid uint32) (int, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return 0, err
	}
	key, err := s.attemptsKey(e, mailbox, uidValidity, uid)
	if err != nil {
		return 0, err
	}
	pipe := s.rdb.TxPipeline()
	incr := pipe.Incr(ctx, key)
	pipe.Expire(ctx, key, attemptsTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("count attempt of %s %s uid %d: %w", e, mailbox, uid, err)
	}
	return int(incr.Val()), nil
}

// ClearAttempts forgets the attempts of the messages uids of mailbox, once
// they were ingested, in one command. Messages without attempts are fine.
func (s *Store) ClearAttempts(ctx context.Context, email, mailbox string, uidValidity uint32, uids ...uint32) error {
	if len(uids) == 0 {
		return nil
	}
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	keys := make([]string, len(uids))
	for i, uid := range uids {
		if keys[i], err = s.attemptsKey(e, mailbox, uidValidity, uid); err != nil {
			return err
		}
	}
	if err := s.rdb.Del(ctx, keys...).Err(); err != nil {
		return fmt.Errorf("clear attempts of %d mails of %s %s: %w", len(uids), e, mailbox, err)
	}
	return nil
}
