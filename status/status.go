// Package status gathers what an operator needs to see: accounts, quota,
// fetcher processes, queue, recent warnings.
//
// Everything is read from Redis, so any mailgate process (or `mailgate
// status` on another machine) shows the same picture: the HTTP /status
// page, the CLI's `status --json` and the Prometheus gauges of package
// metrics all come from Sources.Gather.
package status

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/sendlimit"
)

// Status is the whole picture, as /status and `mailgate status --json`
// print it.
type Status struct {
	At       time.Time `json:"at"`
	Accounts []Account `json:"accounts"`
	Queue    Queue     `json:"queue"`
	// Fetchers are the fetcher processes sharing the accounts' polling,
	// alive by their heartbeat, sorted by process.
	Fetchers []Fetcher `json:"fetchers"`
	// Warnings are the most recent warning events, newest first.
	Warnings []Warning `json:"warnings"`
}

// Account is one connected (or once connected) account.
type Account struct {
	Email        string         `json:"email"`
	Kind         accounts.Kind  `json:"kind"`
	State        accounts.State `json:"state"`
	Warning      string         `json:"warning,omitempty"` // what the admin must do, if anything
	LastError    string         `json:"last_error,omitempty"`
	ErrorAt      time.Time      `json:"error_at,omitzero"`
	ConnectedAt  time.Time      `json:"connected_at"`
	LastPoll     time.Time      `json:"last_poll,omitzero"` // last successful search for new mail
	Imported     int64          `json:"imported"`           // mails turned into tickets or comments, all time
	Quarantined  int64          `json:"quarantined"`
	SendViaGmail bool           `json:"send_via_gmail"`
	Aliases      []string       `json:"aliases,omitempty"` // "Send mail as" addresses
	Quota        Quota          `json:"quota"`

	// Throttled is "throttled by Google until 15:04 (reason)" while Gmail
	// asks us to leave the account alone; "" otherwise.
	Throttled      string    `json:"throttled,omitempty"`
	ThrottledUntil time.Time `json:"throttled_until,omitzero"`
}

// Quota is an account's Gmail sending over the rolling 24 hours.
type Quota struct {
	Used    int64 `json:"used"`    // messages sent via Gmail
	Limit   int   `json:"limit"`   // the daily limit of the account's kind
	Blocked bool  `json:"blocked"` // Gmail answered with its daily-limit error
	// FreesAt is when the oldest message sent leaves the 24-hour window
	// (or Gmail's block ends), so that the account may send via Gmail
	// again; zero when nothing counts against the window.
	FreesAt time.Time `json:"frees_at,omitzero"`
}

// Queue summarises the relay's queue.
type Queue struct {
	Depth  int64     `json:"depth"` // messages not yet sent nor bounced
	Oldest time.Time `json:"oldest,omitzero"`
	// OldestAgeSeconds is how long the oldest message has waited; 0 when
	// the queue is empty.
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// Problem is "" while delivery can proceed, else what stops it (the
	// delivery queue missing from Redis).
	Problem string `json:"problem,omitempty"`
	// Deferred are the deferred messages due soonest (at most
	// DefaultDeferred), soonest first.
	Deferred []Deferred `json:"deferred"`
	// BouncedToday counts the messages that bounced since midnight UTC.
	BouncedToday int64 `json:"bounced_today"`
}

// Deferred is a message waiting for another try.
type Deferred struct {
	ID          string    `json:"id"`
	Recipients  int       `json:"recipients"` // recipients still to deliver to
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
	LastError   string    `json:"last_error,omitempty"`
}

// DefaultDeferred is how many deferred messages Gather returns.
const DefaultDeferred = 10

// QueueDetails is implemented by a QueueStats that can list its deferred
// messages and count bounces (*smtprelay.Queue does). EachDeferred calls
// fn for the n deferred messages due soonest; BouncedSince counts the
// messages that bounced at or after since.
type QueueDetails interface {
	EachDeferred(ctx context.Context, n int, fn func(id string, rcpts, attempts int, next time.Time, lastErr string)) error
	BouncedSince(ctx context.Context, since time.Time) (int64, error)
}

// AccountLister is the part of *accounts.Store that Gather reads.
type AccountLister interface {
	List(ctx context.Context) ([]*accounts.Account, error)
}

// QueueStats is the part of *smtprelay.Queue that Gather reads.
type QueueStats interface {
	Stats(ctx context.Context) (depth int64, oldest time.Time, err error)
}

// QueueProblem is implemented by a QueueStats that can tell whether
// delivery can proceed (*smtprelay.Queue does): Problem is "" when it can.
type QueueProblem interface {
	Problem(ctx context.Context) (string, error)
}

// QuotaReader is the part of *smtprelay.Quota (smtprelay.NewQuota) that
// Gather reads. AppliedLimit is the daily limit the relay last enforced on
// the account (0: none yet); it wins over the reader's configured one, so
// that a CLI run with another config shows what the relay does.
type QuotaReader interface {
	Used(ctx context.Context, account string) (used int64, blocked bool, err error)
	AppliedLimit(ctx context.Context, account string) (int, error)
	FreesAt(ctx context.Context, account string) time.Time
}

// ReadQuota is the one home of an account's quota figures, for every view:
// its use, whether Gmail blocked it, when its window frees, and its limit,
// the relay's applied one when there is one, else configured.
func ReadQuota(ctx context.Context, q QuotaReader, account string, configured int) (Quota, error) {
	r := Quota{Limit: configured}
	var err error
	if r.Used, r.Blocked, err = q.Used(ctx, account); err != nil {
		return r, err
	}
	if r.Used > 0 || r.Blocked {
		r.FreesAt = q.FreesAt(ctx, account).UTC()
	}
	applied, err := q.AppliedLimit(ctx, account)
	if applied > 0 {
		r.Limit = applied
	}
	return r, err
}

// DefaultWarnings is how many recent warnings Gather returns when
// Sources.Warnings is 0.
const DefaultWarnings = 10

// quotaReads is how many accounts' quotas are read at once: with a
// thousand accounts, one after the other would take a round trip each.
const quotaReads = 16

// Sources say where Gather reads. Accounts, Queue and Quota are required.
type Sources struct {
	Accounts AccountLister
	Queue    QueueStats
	Quota    QuotaReader
	// Limits gives the daily Gmail limits of an account kind, as the relay
	// applies them (config relay.*_daily_limit); nil means
	// accounts.Kind.DefaultLimits.
	Limits func(accounts.Kind) sendlimit.Limits
	// Events is the Redis holding the ticket events stream, EventsKey its
	// key (tickets.Store.Key("events")); nil Events: no warnings.
	Events    redis.UniversalClient
	EventsKey string
	// Warnings is how many recent warnings to return: 0 means
	// DefaultWarnings, a negative number none.
	Warnings int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Gather reads the status. It fails as a whole when any read fails: a
// partial picture would look like a healthy one.
func (s Sources) Gather(ctx context.Context) (*Status, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	limits := s.Limits
	if limits == nil {
		limits = accounts.Kind.DefaultLimits
	}
	st := &Status{At: now().UTC(), Accounts: []Account{}, Fetchers: []Fetcher{}, Warnings: []Warning{}}

	list, err := s.Accounts.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	for _, a := range list {
		var until time.Time
		if a.Throttled(st.At) {
			until = a.ThrottledUntil
		}
		st.Accounts = append(st.Accounts, Account{
			Throttled: a.ThrottleNote(st.At.Local()), ThrottledUntil: until,
			Email: a.Email, Kind: a.Kind, State: a.State, Warning: a.Warning,
			LastError: a.LastError, ErrorAt: a.ErrorAt, ConnectedAt: a.ConnectedAt,
			LastPoll: a.LastPoll, Imported: a.Imported, Quarantined: a.Quarantined,
			SendViaGmail: a.SendViaGmail, Aliases: a.Aliases,
			Quota: Quota{Limit: limits(a.Kind).Messages},
		})
	}
	if err := s.readQuotas(ctx, st.Accounts); err != nil {
		return nil, err
	}
	if st.Fetchers, err = s.readFetchers(ctx); err != nil {
		return nil, err
	}

	depth, oldest, err := s.Queue.Stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("status: queue: %w", err)
	}
	st.Queue = Queue{Depth: depth, Deferred: []Deferred{}}
	if depth > 0 && !oldest.IsZero() {
		st.Queue.Oldest = oldest.UTC()
		st.Queue.OldestAgeSeconds = max(0, st.At.Sub(oldest).Seconds())
	}
	if qp, ok := s.Queue.(QueueProblem); ok {
		if st.Queue.Problem, err = qp.Problem(ctx); err != nil {
			return nil, fmt.Errorf("status: queue: %w", err)
		}
	}

	if qd, ok := s.Queue.(QueueDetails); ok {
		if err := qd.EachDeferred(ctx, DefaultDeferred, func(id string, rcpts, attempts int, next time.Time, lastErr string) {
			st.Queue.Deferred = append(st.Queue.Deferred, Deferred{ID: id, Recipients: rcpts, Attempts: attempts, NextAttempt: next.UTC(), LastError: lastErr})
		}); err != nil {
			return nil, fmt.Errorf("status: queue: %w", err)
		}
		midnight := st.At.Truncate(24 * time.Hour)
		if st.Queue.BouncedToday, err = qd.BouncedSince(ctx, midnight); err != nil {
			return nil, fmt.Errorf("status: queue: %w", err)
		}
	}

	n := s.Warnings
	if n == 0 {
		n = DefaultWarnings
	}
	if n > 0 && s.Events != nil {
		if st.Warnings, err = RecentWarnings(ctx, s.Events, s.EventsKey, n); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// readQuotas fills in each account's quota use, a few accounts at a time;
// the first failure stops the rest.
func (s Sources) readQuotas(ctx context.Context, accts []Account) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, quotaReads)
	for i := range accts {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		a := &accts[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			q, err := ReadQuota(ctx, s.Quota, a.Email, a.Quota.Limit)
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("status: quota of %s: %w", a.Email, err)
				}
				mu.Unlock()
				cancel()
				return
			}
			a.Quota = q
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("status: quota: %w", err)
	}
	return nil
}
