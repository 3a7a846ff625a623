package accounts

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Compare-and-set on the lease value, so that a holder whose lease expired
// and was taken over cannot extend or delete the new holder's lease.
var (
	renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)
)

// AcquireLease takes the account's polling lease for holder (a value unique
// to one fetcher, e.g. host:pid:random) for ttl, if no one holds it. Two
// mailgate processes on one Redis thus never poll the same mailbox; a dead
// holder's lease expires and another process takes over.
func (s *Store) AcquireLease(ctx context.Context, email, holder string, ttl time.Duration) (bool, error) {
	e, err := leaseArgs(email, holder, ttl)
	if err != nil {
		return false, err
	}
	ok, err := s.rdb.SetNX(ctx, s.leaseKey(e), holder, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("lease of %s: %w", e, err)
	}
	return ok, nil
}

// RenewLease extends holder's lease to ttl from now. False means holder no
// longer has it (it expired, maybe taken over): stop polling.
func (s *Store) RenewLease(ctx context.Context, email, holder string, ttl time.Duration) (bool, error) {
	e, err := leaseArgs(email, holder, ttl)
	if err != nil {
		return false, err
	}
	n, err := renewScript.Run(ctx, s.rdb, []string{s.leaseKey(e)}, holder, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("renew lease of %s: %w", e, err)
	}
	return n == 1, nil
}

// ReleaseLease gives holder's lease up, so another process can take over
// at once; it does nothing if holder no longer has it.
func (s *Store) ReleaseLease(ctx context.Context, email, holder string) error {
	e, err := leaseArgs(email, holder, time.Millisecond)
	if err != nil {
		return err
	}
	if err := releaseScript.Run(ctx, s.rdb, []string{s.leaseKey(e)}, holder).Err(); err != nil {
		return fmt.Errorf("release lease of %s: %w", e, err)
	}
	return nil
}

func leaseArgs(email, holder string, ttl time.Duration) (string, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return "", err
	}
	if holder == "" {
		return "", fmt.Errorf("lease of %s: empty holder", e)
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

// Attempt counts one more ingest attempt of a message (poison-mail
// accounting) and returns the count including this one. The fetcher
// quarantines the message once it reaches fetch.max_attempts.
func (s *Store) Attempt(ctx context.Context, email string, uidValidity, uid uint32) (int, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return 0, err
	}
	key := s.attemptsKey(e, uidValidity, uid)
	pipe := s.rdb.TxPipeline()
	incr := pipe.Incr(ctx, key)
	pipe.Expire(ctx, key, attemptsTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("count attempt of %s uid %d: %w", e, uid, err)
	}
	return int(incr.Val()), nil
}

// ClearAttempts forgets the attempts of a message, once it was ingested or
// quarantined.
func (s *Store) ClearAttempts(ctx context.Context, email string, uidValidity, uid uint32) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	if err := s.rdb.Del(ctx, s.attemptsKey(e, uidValidity, uid)).Err(); err != nil {
		return fmt.Errorf("clear attempts of %s uid %d: %w", e, uid, err)
	}
	return nil
}
