package accounts

import (
	"context"
	"fmt"
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
