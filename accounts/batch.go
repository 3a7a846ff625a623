package accounts

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RenewLeases extends me's leases of emails for ttl, as AcquireLease does
// for each, in one pipeline: a process holding thousands of leases renews
// them in a few round trips instead of one each. A lease that another
// holder has now comes back not Mine; one whose holder's process is gone
// is not taken over here (AcquireLease does that). The error is Redis not
// answering, or an email that is not an address; then no lease counts as
// renewed.
func (s *Store) RenewLeases(ctx context.Context, emails []string, me Holder, ttl time.Duration) ([]Lease, error) {
	keys := make([]string, len(emails))
	for i, email := range emails {
		e, err := leaseArgs(email, me, ttl)
		if err != nil {
			return nil, err
		}
		keys[i] = e
	}
	now := s.opts.Now()
	cmds, err := s.renewPipeline(ctx, keys, me, ttl)
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted or flushed its scripts: load it, once.
		if err = leaseScript.Load(ctx, s.rdb).Err(); err == nil {
			cmds, err = s.renewPipeline(ctx, keys, me, ttl)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("renew %d leases: %w", len(emails), err)
	}
	leases := make([]Lease, len(emails))
	for i, cmd := range cmds {
		res, err := cmd.Slice()
		if err != nil {
			return nil, fmt.Errorf("lease of %s: %w", keys[i], err)
		}
		if leases[i], _, err = leaseReply(keys[i], res, me, now); err != nil {
			return nil, err
		}
	}
	return leases, nil
}

func (s *Store) renewPipeline(ctx context.Context, keys []string, me Holder, ttl time.Duration) ([]*redis.Cmd, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(keys))
	value := me.String()
	for i, e := range keys {
		cmds[i] = leaseScript.EvalSha(ctx, pipe, []string{s.leaseKey(e)}, value, ttl.Milliseconds(), "")
	}
	_, err := pipe.Exec(ctx)
	return cmds, err
}

// RecordPolls records, as RecordPoll with nothing imported, that each of
// emails was searched for new mail just now, in one pipeline: at 10,000
// mailboxes polled every minute, one round trip a second instead of 167.
// An account that is gone is skipped; the error is Redis not answering.
func (s *Store) RecordPolls(ctx context.Context, emails []string) error {
	now := s.now()
	keys := make([]string, 0, len(emails))
	for _, email := range emails {
		if e, err := NormalizeEmail(email); err == nil {
			keys = append(keys, e)
		}
	}
	run := func() ([]*redis.Cmd, error) {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(keys))
		for i, e := range keys {
			cmds[i] = updateScript.EvalSha(ctx, pipe, []string{s.accountKey(e)}, s.updateArgs(e, "exists", false, pollUpdate(now, 0))...)
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, err := run()
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err = updateScript.Load(ctx, s.rdb).Err(); err == nil {
			cmds, err = run()
		}
	}
	if err != nil {
		return fmt.Errorf("record %d polls: %w", len(keys), err)
	}
	for i, cmd := range cmds {
		res, err := cmd.Text()
		if err := updateResult(keys[i], res, err); err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrDisconnected) {
			return err
		}
	}
	return nil
}

// pollUpdate is what RecordPoll and RecordPolls write.
func pollUpdate(now string, imported int) update {
	return update{
		set:  []string{"last_poll", now},
		incr: []string{"imported", strconv.Itoa(imported)},
	}
}
