package status

import (
	"context"
	"fmt"
	"time"

	"github.com/mailgate/mailgate/accounts"
)

// Fetcher is one fetcher process sharing the polling of the accounts, as
// its heartbeat in Redis tells.
type Fetcher struct {
	Process string `json:"process"` // host:pid
	// Accounts is how many account leases it holds: the accounts it polls.
	Accounts int `json:"accounts"`
	// LastSeen is its last heartbeat, by Redis's clock; zero for a process
	// of a version that did not record it.
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// FetcherLister is implemented by an AccountLister that can list the live
// fetcher processes (*accounts.Store does).
type FetcherLister interface {
	Fetchers(ctx context.Context) ([]accounts.Peer, error)
}

// readFetchers lists the fetcher processes through s.Accounts, when it can.
func (s Sources) readFetchers(ctx context.Context) ([]Fetcher, error) {
	out := []Fetcher{}
	fl, ok := s.Accounts.(FetcherLister)
	if !ok {
		return out, nil
	}
	peers, err := fl.Fetchers(ctx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	for _, p := range peers {
		out = append(out, Fetcher{Process: p.Holder.Process(), Accounts: p.Held, LastSeen: p.LastSeen})
	}
	return out, nil
}

// Summary is the fetcher's line in `mailgate status` and the console:
// "host:4242 polls 3 of 5 accounts, last seen 4s ago".
func (f Fetcher) Summary(now time.Time, total int) string {
	seen := "last seen unknown"
	if !f.LastSeen.IsZero() {
		seen = "last seen " + max(0, now.Sub(f.LastSeen)).Truncate(time.Second).String() + " ago"
	}
	return fmt.Sprintf("%s polls %d of %d accounts, %s", f.Process, f.Accounts, total, seen)
}
