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
	"github.com/mailgate/mailgate/internal/health"
	"github.com/mailgate/mailgate/sendlimit"
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
	Limits func(kind accounts.Kind) sendlimit.Limits
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
	// Timeouts bound each wait for a server while delivering; zero fields
	// take DefaultTimeouts.
	Timeouts Timeouts
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
	// RouteNone for a message that expired before any try) and the
	// outcome. For metrics: it must not block.
	OnDelivery func(route Route, outcome Outcome)
	// OnInterrupted, if set, is told of each try taken over that had
	// begun and never recorded its outcome (its process killed between
	// the peer's 250 and our record): its recipients may have the message
	// twice. For metrics: it must not block.
	OnInterrupted func()
	// OnQueueLost, if set, is told when Redis lost the delivery queue and
	// the relay made it again, with how many accepted messages went with
	// it (-1: unknown). For metrics: it must not block.
	OnQueueLost func(lost int64)
}

// Relay delivers what the Server queued.
type Relay struct {
	q        *Queue
	acc      AccountStore
	quota    *Quota
	gmail    *gmailRoute
	own      courier    // how the relay sends mail itself: MX hosts or the smarthost
	ownRoute Route      // RouteDirect or RouteSmarthost
	sessions *connCache // own's sessions kept open between messages
	opts     RelayOptions
	log      *slog.Logger
	// One line when Redis stops answering the workers (or housekeeping)
	// and one when it is back, not one per worker and retry.
	readHealth, houseHealth *health.Reporter

	umu     sync.Mutex
	unsaved map[string]*Message // outcomes Redis did not take, by queue id (unsaved.go)
	unsent  map[string]bool     // marked sending, then not tried: Begin's answer was lost
}

// NewRelay returns the delivery side of the relay.
func NewRelay(q *Queue, acc AccountStore, opts RelayOptions) *Relay {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Timeouts = opts.Timeouts.orDefault()
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
		opts.Limits = accounts.Kind.DefaultLimits
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
	r := &Relay{
		q: q, acc: acc, opts: opts, log: opts.Logger, unsaved: map[string]*Message{}, unsent: map[string]bool{},
		quota: &Quota{rdb: q.rdb, p: q.p, now: opts.Now},
		gmail: &gmailRoute{opts: opts.Gmail, hostname: opts.Hostname, timeouts: opts.Timeouts},
	}
	r.sessions = newConnCache()
	r.ownRoute, r.own = ownRoute(opts.Direct, opts.Hostname, opts.Timeouts, r.resign, r.sessions)
	r.readHealth = health.New(health.Options{Logger: opts.Logger, Part: "relay delivery", Dependency: "redis",
		Paused: "delivery is paused; accepted mail waits in the queue"})
	r.houseHealth = health.New(health.Options{Logger: opts.Logger, Part: "relay housekeeping", Dependency: "redis",
		Paused: "deferred mail is not made ready and a stopped process's mail is not taken over"})
	return r
}

// Quota exposes the quota counters, for status displays.
func (r *Relay) Quota() *Quota { return r.quota }

// Run delivers until ctx ends; a try in progress then finishes (bounded by
// Timeouts and ShutdownGrace) so that its outcome is recorded.
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
	r.sessions.closeAll(r.opts.Timeouts)
	// A try cut by the grace period left its message pending: say we are
	// gone so that the next process takes it over at once.
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := r.q.Gone(gctx, names); err != nil {
		r.log.Warn("relay: clearing the workers' heartbeat", "err", err)
	}
	r.resaveAll(gctx)
	if n := r.unsavedCount(); n > 0 {
		r.log.Error("relay: stopping with delivery outcomes Redis did not take: whoever takes these messages over may send them again", "messages", n)
	}
	return nil
}

// aliveTTL is how long a delivery worker counts as alive after its last
// heartbeat; a process killed mid-delivery has its messages reclaimed by
// another one (or its own restart) this long after.
const aliveTTL = 15 * time.Second

// housekeeping records again the outcomes Redis did not take, makes
// deferred messages ready when their time comes, drops tentative messages
// never confirmed, watches the queue's health, keeps this process's
// workers marked alive, and takes over the unfinished work of workers that
// died.
func (r *Relay) housekeeping(ctx context.Context, names []string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 0; ; i++ {
		// Before Promote: an outcome kept in memory goes to Redis before
		// its message can be tried again.
		r.resaveAll(ctx)
		r.sessions.closeIdle(r.opts.Timeouts)
		// Each step is tried even when another failed: the heartbeat must
		// go on, or other processes take over mail being delivered here.
		start := time.Now()
		_, err := r.q.Promote(ctx)
		if n, derr := r.q.DropTentative(ctx); derr == nil && n > 0 {
			r.log.Info("relay: dropped messages stored while the client was told 451: its retry is the copy delivered", "messages", n)
		}
		r.q.Health(ctx) // the depth a loss is counted against
		if i%3 == 0 {
			aerr := r.q.Alive(ctx, names, aliveTTL)
			n, rerr := r.q.Reclaim(ctx, names[0])
			if n > 0 {
				r.log.Info("relay: took over mail a stopped process was delivering", "messages", n)
			}
			err = errors.Join(err, aerr, rerr)
		}
		r.houseHealth.Report(ctx, start, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Process makes one delivery try of m and records its outcome: decide how
// it goes, deliver it through that route to the recipients still pending,
// record what became of each recipient. When Gmail refuses the account's
// mail (its daily limit, a revoked grant), that is one more decision in
// the same try, for the recipients Gmail refused, so they go another way
// at once.
//
// The partial-failure rule: each recipient's outcome is its own, and a
// recipient delivered once is never sent the message again, whatever
// becomes of the others (a partial Gmail acceptance reroutes only the
// recipients Gmail refused). An outcome Redis does not take is kept in
// memory and recorded before any further try of the message. One window
// stays open: a process killed between the peer's 250 and our record.
// There we favour delivery over silence: the message is tried again and
// its recipients may get it twice, and the try taken over is logged and
// counted (OnInterrupted), never hidden.
func (r *Relay) Process(ctx context.Context, m *Message) error {
	if done, err := r.settle(ctx, m); done || err != nil {
		return err
	}
	// A copy read as sending whose try never recorded an outcome: told
	// once Begin confirms the copy is current (not an outcome recorded
	// here meanwhile).
	var taken *Message // the copy as read, naming the try's worker
	if m.State == StateSending && !r.wasUnsent(m.ID) {
		c := *m
		taken = &c
	}
	err := r.try(ctx, m, taken)
	if m.outcome && (err != nil || len(m.unbounced) > 0) {
		r.keep(m)
	}
	return err
}

// try is Process once the message's past is settled.
func (r *Relay) try(ctx context.Context, m *Message, taken *Message) error {
	if len(m.Pending()) == 0 {
		// An outcome recorded twice left an entry behind: nothing to send.
		m.outcome = true
		return r.finish(ctx, m, nil)
	}
	if r.opts.Now().Sub(m.CreatedAt) > r.opts.MaxLifetime {
		m.outcome = true
		return r.finish(ctx, m, fmt.Errorf("gave up after %s in the queue: %s", r.opts.MaxLifetime, m.LastError))
	}
	m.Attempts++
	// Recipients no route can deliver fail in this try, whatever becomes
	// of the others; they are recorded with the others' outcome.
	bad, rcpts := undeliverable(m.From, m.Pending())
	if len(rcpts) == 0 {
		m.outcome = true
		m.apply(RouteNone, r.told(RouteNone, bad))
		return r.record(ctx, m, decision{route: RouteNone}, bad)
	}
	hd := readHeader(m.Data)
	d, err := r.decide(ctx, m, hd, reasonNone)
	if err != nil {
		return r.retry(ctx, m, fmt.Errorf("routing: %w", err))
	}
	if d.route == RouteDeferred {
		m.Attempts-- // waiting for quota is not a failed try
	} else if err := r.q.Begin(ctx, m); errors.Is(err, ErrNotFound) {
		r.log.Info("relay: deleted before its try, not sent", "queue_id", m.ID)
		return nil
	} else if errors.Is(err, ErrStale) {
		r.log.Info("relay: its record changed since it was read (an outcome recorded meanwhile), not sent from this copy", "queue_id", m.ID)
		return nil
	} else if err != nil {
		r.markUnsent(m.ID) // the mark may have been written: nothing was sent
		return err
	}
	if taken != nil {
		r.interrupted(taken)
	}
	m.outcome = true
	m.apply(RouteNone, r.told(RouteNone, bad))
	res := append(bad, r.deliver(ctx, m, d, rcpts)...)
	if te, ok := gmailThrottled(res); ok && d.route == RouteGmail {
		return r.record(ctx, m, r.throttled(ctx, m, d, te), res)
	}
	r.clearThrottle(ctx, d, res)
	if why, refused := gmailRefused(res); len(refused) > 0 {
		next, err := r.decide(ctx, m, hd, why)
		if err != nil {
			r.log.Warn("relay: routing what Gmail refused", "queue_id", m.ID, "err", err)
			return r.record(ctx, m, d, res) // the refused recipients wait for the next try
		}
		d, res = next, append(res.except(refused), r.deliver(ctx, m, next, refused)...)
	}
	return r.record(ctx, m, d, res)
}

// deliver sends m to rcpts as d says, and reports what each recipient's
// try did. Recipients Gmail refused are not reported: they go another way
// in the same try.
func (r *Relay) deliver(ctx context.Context, m *Message, d decision, rcpts []string) Result {
	if d.via == nil {
		// Waiting for the account's quota: no route tries them now.
		return failAll(rcpts, errors.New(d.reason.String()), Deferred)
	}
	res := d.via.Deliver(ctx, d.from, rcpts, d.data)
	m.apply(d.route, res)
	if d.route == RouteGmail {
		r.settleQuota(ctx, m, d.account, res)
	}
	n, refused := map[Outcome]int{}, 0
	for _, rr := range res {
		if refusedWhy(rr.Err) != reasonNone {
			refused++
			continue
		}
		n[rr.Outcome]++
		r.tell(d.route, rr.Outcome)
	}
	attrs := []any{"queue_id", m.ID, "route", d.route}
	if d.reason != reasonNone {
		attrs = append(attrs, "reason", d.reason)
	}
	attrs = append(attrs, d.attrs...)
	attrs = append(attrs, "delivered", n[Delivered], "deferred", n[Deferred], "bounced", n[Bounced])
	if refused > 0 {
		attrs = append(attrs, "refused_by_gmail", refused)
	}
	r.log.Info("relay: try", attrs...)
	return res
}

// gmailRefused returns why Gmail refused the account's mail in res, and
// the recipients it refused; none when it did not.
func gmailRefused(res Result) (reason, []string) {
	why, refused := reasonNone, []string(nil)
	for _, rr := range res {
		if w := refusedWhy(rr.Err); w != reasonNone {
			why, refused = w, append(refused, rr.Rcpt)
		}
	}
	return why, refused
}

// settleQuota squares the account's quota with what Gmail did: a message
// Gmail took for no recipient gives its reservation back, and Gmail's own
// daily-limit refusal blocks the account for the rest of the window, since
// Gmail knows better than our count.
func (r *Relay) settleQuota(ctx context.Context, m *Message, account string, res Result) {
	if len(res.rcpts(Delivered)) == 0 {
		r.quota.Release(ctx, account, m.ID, len(res))
	}
	if why, _ := gmailRefused(res); why == reasonGmailLimit {
		r.quota.Block(ctx, account)
		r.log.Warn("relay: Gmail says the daily limit is reached", "account", account, "queue_id", m.ID)
		r.quotaWarning(ctx, account, -1, 0)
	}
}

// record keeps what a try did (deliver put each recipient's outcome in
// m): bounced recipients get a DSN, and pending ones wait, until the
// account's quota frees when the last decision was to wait for it, else
// by the retry schedule.
func (r *Relay) record(ctx context.Context, m *Message, d decision, res Result) error {
	m.Route = d.route
	if bounced := res.errs(Bounced); len(bounced) > 0 {
		r.bounce(ctx, m, bounced)
	}
	switch {
	case len(m.Pending()) == 0:
		return r.finish(ctx, m, nil)
	case d.route == RouteDeferred:
		return r.deferUntil(ctx, m, d)
	}
	var last error
	for _, rr := range res {
		if rr.Outcome == Deferred {
			last = rr.Err
		}
	}
	return r.retry(ctx, m, last)
}

// deferUntil keeps m queued until d.until, when the account's Gmail quota
// frees or Google's throttle of it ends.
func (r *Relay) deferUntil(ctx context.Context, m *Message, d decision) error {
	m.Route, m.LastError, m.NextAttempt = RouteDeferred, d.reason.String(), d.until
	attrs := append([]any{"queue_id", m.ID, "account", d.account, "sender", m.From, "reason", d.reason, "until", d.until}, d.attrs...)
	if d.reason == reasonGmailThrottled {
		r.log.Info("relay: deferred until Google's throttle of the account ends", attrs...)
	} else {
		r.log.Warn("relay: deferred until the Gmail quota frees", attrs...)
	}
	return r.q.Defer(ctx, m)
}

// told reports res, which no route tried, to OnDelivery, and returns it.
func (r *Relay) told(route Route, res Result) Result {
	for _, rr := range res {
		r.tell(route, rr.Outcome)
	}
	return res
}

// tell reports the outcome of a try for one recipient to OnDelivery.
func (r *Relay) tell(route Route, o Outcome) {
	if r.opts.OnDelivery != nil {
		r.opts.OnDelivery(route, o)
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
func (r *Relay) finish(ctx context.Context, m *Message, expired error) error {
	if expired != nil {
		left := map[string]error{}
		for _, rc := range m.Pending() {
			left[rc] = expired
		}
		route := m.Route
		if route != RouteGmail && route != RouteDirect && route != RouteSmarthost {
			route = RouteNone // never tried, or deferred for quota
		}
		for range left {
			r.tell(route, Bounced)
		}
		m.apply(route, failAll(m.Pending(), expired, Bounced))
		r.bounce(ctx, m, left)
		m.LastError = expired.Error()
	}
	m.State = StateSent
	if len(m.Delivered()) == 0 {
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
