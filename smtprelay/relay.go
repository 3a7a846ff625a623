package smtprelay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tickets"
)

// Signer DKIM-signs mail for the domains it holds keys for (package dkim).
type Signer interface {
	CanSign(domain string) bool
	Sign(raw []byte) ([]byte, error)
}

// RelayOptions configure delivery.
type RelayOptions struct {
	Hostname string
	Gmail    GmailOptions
	Direct   DirectOptions
	Signer   Signer // nil: nothing is signed
	// Limits returns the Gmail sending limits of an account kind.
	Limits func(kind accounts.Kind) Limits
	// WarnAt is the share of the daily limit that raises a warning (0.9).
	WarnAt float64
	// RetrySchedule are the waits after each failed try; the last repeats.
	RetrySchedule []time.Duration
	// MaxLifetime: a message still undelivered this long after it was
	// accepted bounces (Postfix's maximal_queue_lifetime, 5 days).
	MaxLifetime time.Duration
	// RewriteFrom is the relay's own address for the rewrite-from policy.
	RewriteFrom string
	Workers     int
	// Timeout bounds one SMTP command; a try takes at most a few.
	Timeout time.Duration
	// Consumer names this process among the delivery workers.
	Consumer string
	// ShutdownGrace bounds how long tries in progress may run once Run's
	// context ends; then they are cut, and their messages are retried by
	// the next process to start (default 30s).
	ShutdownGrace time.Duration
	// Publish puts an event on the helpdesk's stream (quota.warning,
	// delivery.failed); nil drops them.
	Publish func(ctx context.Context, typ tickets.EventType, ticket int64, data any)
	Logger  *slog.Logger
	Now     func() time.Time
	// OnDelivery, if set, is told the outcome of each delivery try for
	// each recipient: the route (RouteGmail, RouteDirect, RouteSmarthost;
	// RouteNone for a message that expired before any try) and the result
	// (ResultDelivered, ResultDeferred, ResultBounced). For metrics: it
	// must not block.
	OnDelivery func(route, result string)
	// OnTokenRefresh, if set, is called after each refresh of an
	// account's Gmail access token, with its error (nil when it worked).
	OnTokenRefresh func(account string, err error)
}

// Delivery results, as told to RelayOptions.OnDelivery.
const (
	ResultDelivered = "delivered" // the recipient's server took it
	ResultDeferred  = "deferred"  // a temporary failure: tried again later
	ResultBounced   = "bounced"   // a permanent failure or expiry: a DSN went back
)

// RouteNone is the route told to OnDelivery for recipients that bounce
// because their message expired in the queue without a route.
const RouteNone = "none"

// Relay delivers what the Server queued.
type Relay struct {
	q           *Queue
	acc         AccountStore
	quota       *Quota
	gmail       *gmailRoute
	directRoute *directRoute
	opts        RelayOptions
	log         *slog.Logger
}

// NewRelay returns the delivery side of the relay.
func NewRelay(q *Queue, acc AccountStore, opts RelayOptions) *Relay {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Minute
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if len(opts.RetrySchedule) == 0 {
		opts.RetrySchedule = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 2 * time.Hour}
	}
	if opts.MaxLifetime <= 0 {
		opts.MaxLifetime = 5 * 24 * time.Hour
	}
	if opts.Limits == nil {
		opts.Limits = DefaultLimits
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if opts.Consumer == "" {
		opts.Consumer = opts.Hostname
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 30 * time.Second
	}
	return &Relay{
		q: q, acc: acc, opts: opts, log: opts.Logger,
		quota:       &Quota{rdb: q.rdb, p: q.p, now: opts.Now},
		gmail:       &gmailRoute{opts: opts.Gmail, acc: acc, hostname: opts.Hostname, timeout: opts.Timeout, sources: map[string]*oauth.Source{}, onRefresh: opts.OnTokenRefresh},
		directRoute: &directRoute{opts: opts.Direct, hostname: opts.Hostname, timeout: opts.Timeout},
	}
}

// DefaultLimits are Google's published limits (seed G11).
func DefaultLimits(kind accounts.Kind) Limits {
	if kind == accounts.KindWorkspace {
		return Limits{Messages: 2000, Recipients: 10000, External: 3000, PerMessageRcpt: 100}
	}
	return Limits{Messages: 500, PerMessageRcpt: 100}
}

// Quota exposes the quota counters, for status displays.
func (r *Relay) Quota() *Quota { return r.quota }

// Run delivers until ctx ends; a try in progress then finishes (bounded by
// Timeout) so that its outcome is recorded.
func (r *Relay) Run(ctx context.Context) error {
	if err := r.q.EnsureGroup(ctx); err != nil {
		return fmt.Errorf("relay queue: %w", err)
	}
	// Tries in progress outlive ctx (a message half sent and not recorded
	// would be sent twice), but only for ShutdownGrace.
	hard, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	stopCut := context.AfterFunc(ctx, func() {
		t := time.NewTimer(r.opts.ShutdownGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cut()
		case <-hard.Done():
		}
	})
	defer stopCut()

	names := make([]string, r.opts.Workers)
	for i := range names {
		names[i] = r.opts.Consumer + "-" + strconv.Itoa(i)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.housekeeping(ctx, names)
	}()
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(ctx, hard, name)
		}()
	}
	wg.Wait()
	// A try cut by the grace period left its message pending: say we are
	// gone so that the next process takes it over at once.
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := r.q.Gone(gctx, names); err != nil {
		r.log.Warn("relay: clearing the workers' heartbeat", "err", err)
	}
	return nil
}

// aliveTTL is how long a delivery worker counts as alive after its last
// heartbeat; a process killed mid-delivery has its messages reclaimed by
// another one (or its own restart) this long after.
const aliveTTL = 15 * time.Second

// housekeeping makes deferred messages ready when their time comes, keeps
// this process's workers marked alive, and takes over the unfinished work
// of workers that died.
func (r *Relay) housekeeping(ctx context.Context, names []string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 0; ; i++ {
		if _, err := r.q.Promote(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("relay: promote deferred mail", "err", err)
		}
		if i%3 == 0 {
			if err := r.q.Alive(ctx, names, aliveTTL); err != nil && ctx.Err() == nil {
				r.log.Warn("relay: heartbeat", "err", err)
			}
			if n, err := r.q.Reclaim(ctx, names[0]); err != nil && ctx.Err() == nil {
				r.log.Warn("relay: reclaiming a dead worker's mail", "err", err)
			} else if n > 0 {
				r.log.Info("relay: took over mail a stopped process was delivering", "messages", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Relay) work(ctx, hard context.Context, consumer string) {
	for ctx.Err() == nil {
		msgs, err := r.q.Next(ctx, consumer, 1, time.Second)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("relay: reading the queue", "err", err)
				time.Sleep(time.Second)
			}
			continue
		}
		for _, m := range msgs {
			// The try outlives a shutdown signal: a message half sent and
			// not recorded would be sent twice.
			tctx, cancel := context.WithTimeout(hard, 5*r.opts.Timeout)
			if err := r.Process(tctx, m); err != nil {
				r.log.Error("relay: recording a delivery", "queue_id", m.ID, "err", err)
			}
			cancel()
		}
	}
}

// Process makes one delivery try of m and records its outcome.
func (r *Relay) Process(ctx context.Context, m *Message) error {
	now := r.opts.Now()
	if now.Sub(m.CreatedAt) > r.opts.MaxLifetime {
		return r.finish(ctx, m, nil, fmt.Errorf("gave up after %s in the queue: %s", r.opts.MaxLifetime, m.LastError))
	}
	m.Attempts++
	hd := readHeader(m.Data)
	d, err := r.route(ctx, m, hd)
	if err != nil {
		return r.retry(ctx, m, fmt.Errorf("routing: %w", err))
	}
	if d.route == routeDefer {
		m.Attempts-- // waiting for quota is not a failed try
		return r.deferForQuota(ctx, m, d)
	}
	var a *attempt
	if d.route == RouteGmail {
		a, err = r.gmail.deliver(ctx, d.account, m)
		if err != nil {
			r.quota.Release(ctx, d.account, m.ID, len(m.To))
		}
		switch {
		case errors.Is(err, errGmailQuota) || errors.Is(err, errAccountUnusable):
			if errors.Is(err, errGmailQuota) {
				// Gmail knows better than our count: stop using the
				// account now and send this message another way at once.
				r.quota.Block(ctx, d.account)
				r.log.Warn("relay: Gmail says the daily limit is reached", "account", d.account, "queue_id", m.ID)
				r.quotaWarning(ctx, d.account, -1, 0)
			}
			if d, err = r.fallback(ctx, m, d.acct, hd, err.Error()); err != nil {
				return r.retry(ctx, m, err)
			}
			if d.route == routeDefer {
				return r.deferForQuota(ctx, m, d)
			}
		case err != nil:
			r.tell(RouteGmail, ResultDeferred, len(m.To))
			return r.retry(ctx, m, err)
		}
	}
	if a == nil {
		a = r.directRoute.deliver(ctx, &Message{From: d.from, To: m.To}, d.data)
	}
	m.Route = d.route
	r.tell(d.route, ResultDelivered, len(a.delivered))
	r.tell(d.route, ResultDeferred, len(a.temp))
	r.tell(d.route, ResultBounced, len(a.perm))
	r.log.Info("relay: try", "queue_id", m.ID, "route", d.route, "reason", d.reason,
		"delivered", len(a.delivered), "deferred", len(a.temp), "failed", len(a.perm))
	m.Done = append(m.Done, a.delivered...)
	m.To = keys(a.temp)
	if len(a.perm) > 0 {
		r.bounce(ctx, m, a.perm)
	}
	if len(m.To) == 0 {
		return r.finish(ctx, m, a.perm, nil)
	}
	var last error
	for _, e := range a.temp {
		last = e
	}
	return r.retry(ctx, m, last)
}

// deferForQuota keeps m queued until d.until, when the account's Gmail
// quota frees.
func (r *Relay) deferForQuota(ctx context.Context, m *Message, d decision) error {
	m.Route, m.LastError, m.NextAttempt = "deferred", d.reason, d.until
	r.log.Warn("relay: deferred until the Gmail quota frees", "queue_id", m.ID, "account", m.From, "reason", d.reason, "until", d.until)
	return r.q.Defer(ctx, m)
}

// tell reports the result of a try for n recipients to OnDelivery.
func (r *Relay) tell(route, result string, n int) {
	if r.opts.OnDelivery == nil {
		return
	}
	for range n {
		r.opts.OnDelivery(route, result)
	}
}

// retry schedules the next try with the configured backoff, perturbed so
// that messages deferred together do not all come back at once.
func (r *Relay) retry(ctx context.Context, m *Message, err error) error {
	if err != nil {
		m.LastError = err.Error()
	}
	i := min(max(m.Attempts-1, 0), len(r.opts.RetrySchedule)-1)
	wait := r.opts.RetrySchedule[i]
	wait += time.Duration(rand.Int64N(int64(wait)/10 + 1))
	m.NextAttempt = r.opts.Now().Add(wait)
	r.log.Info("relay: will retry", "queue_id", m.ID, "attempts", m.Attempts, "next", m.NextAttempt, "err", m.LastError)
	return r.q.Defer(ctx, m)
}

// finish records the end of m: sent, or bounced when nothing went out.
// expired is set when the message outlived the queue lifetime: whatever is
// left bounces.
func (r *Relay) finish(ctx context.Context, m *Message, perm map[string]error, expired error) error {
	if expired != nil {
		left := map[string]error{}
		for _, rc := range m.To {
			left[rc] = expired
		}
		route := m.Route
		if route != RouteGmail && route != RouteDirect && route != RouteSmarthost {
			route = RouteNone // never tried, or deferred for quota
		}
		r.tell(route, ResultBounced, len(m.To))
		r.bounce(ctx, m, left)
		m.To = nil
		m.LastError = expired.Error()
	}
	m.State = StateSent
	if len(m.Done) == 0 {
		m.State = StateBounced
	}
	return r.q.Finish(ctx, m, 0)
}

func (r *Relay) quotaWarning(ctx context.Context, account string, used, limit int) {
	msg := fmt.Sprintf("%s has sent %d of its %d daily Gmail messages: beyond the limit notifications go out directly", account, used, limit)
	if used < 0 {
		msg = account + ": Gmail refused a message with its daily sending limit error; notifications go out directly for up to 24 hours"
	}
	r.log.Warn("relay: quota warning", "account", account, "used", used, "limit", limit)
	if r.opts.Publish != nil {
		r.opts.Publish(ctx, tickets.EventQuotaWarning, 0, map[string]any{"account": account, "used": used, "limit": limit, "message": msg})
	}
}
