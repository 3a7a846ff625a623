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
)

var (
	//go:embed share.lua
	shareLua    string
	shareScript = redis.NewScript(shareLua)
)

// Peer is a fetcher process sharing the accounts, as its last heartbeat
// told: who it is and how many account leases it held.
type Peer struct {
	Holder Holder
	Held   int
	// LastSeen is when its last heartbeat came, by Redis's clock; Fetchers
	// sets it (zero from Heartbeat, and for a process of a version that
	// did not record it).
	LastSeen time.Time
}

func (s *Store) fetchersKey() string { return s.p + "fetchers" }
func (s *Store) seenKey() string     { return s.p + "fetchers:seen" }

// Heartbeat tells the other fetcher processes on this Redis that me is
// alive and holds held leases, for ttl, and returns the processes alive
// now (me included) with what they hold. A process that stops calling it
// drops out of the list ttl later; Leave takes it out at once. It is one
// script call, whatever the number of accounts.
func (s *Store) Heartbeat(ctx context.Context, me Holder, held int, ttl time.Duration) ([]Peer, error) {
	if err := me.valid(); err != nil {
		return nil, fmt.Errorf("fetcher heartbeat: %w", err)
	}
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("fetcher heartbeat: ttl %s is under a millisecond", ttl)
	}
	res, err := shareScript.Run(ctx, s.rdb, []string{s.fetchersKey(), s.seenKey()}, me.String(), ttl.Milliseconds(), max(held, 0)).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("fetcher heartbeat: %w", err)
	}
	if len(res)%2 != 0 {
		return nil, errors.New("fetcher heartbeat: script returned an odd list")
	}
	peers := make([]Peer, 0, len(res)/2)
	for i := 0; i < len(res); i += 2 {
		n, _ := strconv.Atoi(res[i+1])
		peers = append(peers, Peer{Holder: parseHolder(res[i]), Held: n})
	}
	return peers, nil
}

// Leave takes me out of the fetcher processes at once, on a clean stop, so
// the others take their share of its accounts without waiting for its
// heartbeat to run out.
func (s *Store) Leave(ctx context.Context, me Holder) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, s.fetchersKey(), me.String())
		p.HDel(ctx, s.seenKey(), me.String())
		return nil
	})
	if err != nil {
		return fmt.Errorf("fetcher leave: %w", err)
	}
	return nil
}

// fetchersScript lists the live fetcher processes without changing
// anything: {holder, held, last heartbeat ms or "", ...}.
var fetchersScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local exp, held = string.match(all[i + 1], '^(%d+) (%d+)$')
  if exp and tonumber(exp) > now then
    out[#out + 1] = all[i]
    out[#out + 1] = held
    out[#out + 1] = redis.call('HGET', KEYS[2], all[i]) or ''
  end
end
return out`)

// Fetchers lists the fetcher processes alive now, as their heartbeats
// tell, sorted by process, for the operator's view (status); it sends no
// heartbeat.
func (s *Store) Fetchers(ctx context.Context) ([]Peer, error) {
	res, err := fetchersScript.Run(ctx, s.rdb, []string{s.fetchersKey(), s.seenKey()}).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("fetchers: %w", err)
	}
	if len(res)%3 != 0 {
		return nil, errors.New("fetchers: script returned a list not in threes")
	}
	peers := make([]Peer, 0, len(res)/3)
	for i := 0; i < len(res); i += 3 {
		p := Peer{Holder: parseHolder(res[i])}
		p.Held, _ = strconv.Atoi(res[i+1])
		if ms, err := strconv.ParseInt(res[i+2], 10, 64); err == nil {
			p.LastSeen = time.UnixMilli(ms).UTC()
		}
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b Peer) int { return strings.Compare(a.Holder.String(), b.Holder.String()) })
	return peers, nil
}

// LeaseState is an account's polling lease as PeekLeases saw it: the zero
// Holder when nobody holds it.
type LeaseState struct {
	Holder Holder
	// Left is how long it runs unless renewed; zero when free, negative
	// for a lease without expiry.
	Left time.Duration
}

// Free says whether me may take the lease now: nobody holds it, me does,
// or its holder was a process on this host that is gone.
func (l LeaseState) Free(me Holder) bool {
	return l.Holder == (Holder{}) || l.Holder == me || l.Holder.Liveness() == Gone
}

// peekChunk bounds one call of PeekLeases, so a look at 10,000 leases is
// ten short script runs, not one long one that holds Redis up.
const peekChunk = 1000

// peekScript returns each key's value (false when missing) and PTTL, in
// one round trip for the whole chunk.
var peekScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do
  out[2 * i - 1] = redis.call('GET', k)
  out[2 * i] = redis.call('PTTL', k)
end
return out`)

// PeekLeases reads the leases of emails (normalised addresses, as List
// returns them) without taking any: a fetcher looking for leases it may
// take, in one call per thousand accounts instead of one per account.
func (s *Store) PeekLeases(ctx context.Context, emails []string) ([]LeaseState, error) {
	out := make([]LeaseState, 0, len(emails))
	keys := make([]string, 0, min(len(emails), peekChunk))
	for start := 0; start < len(emails); start += peekChunk {
		keys = keys[:0]
		for _, e := range emails[start:min(start+peekChunk, len(emails))] {
			keys = append(keys, s.leaseKey(e))
		}
		res, err := peekScript.Run(ctx, s.rdb, keys).Slice()
		if err != nil {
			return nil, fmt.Errorf("peek leases: %w", err)
		}
		if len(res) != 2*len(keys) {
			return nil, fmt.Errorf("peek leases: script returned %d values for %d keys", len(res), len(keys))
		}
		for i := 0; i < len(res); i += 2 {
			v, ok := res[i].(string)
			if !ok {
				out = append(out, LeaseState{}) // nobody holds it
				continue
			}
			ms, _ := res[i+1].(int64)
			l := LeaseState{Holder: parseHolder(v), Left: time.Duration(ms) * time.Millisecond}
			if ms < 0 {
				l.Left = -1
			}
			out = append(out, l)
		}
	}
	return out, nil
}
