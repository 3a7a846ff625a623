package imapfetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/health"
	"github.com/mailgate/mailgate/mailparse"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tickets"
	"github.com/mailgate/mailgate/tlsmode"
)

// Options configure a Fetcher. cmd/mailgate builds them from config; zero
// fields get the defaults named below.
type Options struct {
	// IMAPAddr is host:port of the IMAP server; default imap.gmail.com:993.
	IMAPAddr string
	// TLSMode is tlsmode.Implicit (default, like imap.gmail.com:993),
	// tlsmode.StartTLS, or tlsmode.Plain, which is refused unless the
	// host is loopback.
	TLSMode tlsmode.Mode
	// TLSConfig is used for TLS (RootCAs from fetch.ca_file); nil means
	// the system roots.
	TLSConfig *tls.Config
	// PollInterval is how often INBOX is searched for new mail, and how
	// often Run re-lists accounts; default 1m.
	PollInterval time.Duration
	// IdleRestart re-issues IDLE this often, before the server's cut-off
	// (Gmail's is about 29 minutes); default 25m.
	IdleRestart time.Duration
	// LeaseTTL is the lifetime of an account's polling lease; it is
	// renewed every LeaseTTL/3. Default 30s.
	LeaseTTL time.Duration
	// StartSpread is the window over which the workers Run starts together
	// (at start, or when many accounts are connected at once) make their
	// first login, one after another, so that thousands of mailboxes do
	// not log in to Google (and refresh their tokens) in the same second;
	// logins are never more than maxStartGap apart, so a few accounts
	// start at once. Default 30s: 10,000 mailboxes all log in and poll
	// within a minute of start.
	StartSpread time.Duration
	// BackoffMax caps the wait between reconnects; default 5m. The first
	// wait is 1s (or BackoffMax if smaller), doubling, with jitter.
	BackoffMax time.Duration
	// IDLE waits for new mail with IMAP IDLE when the server offers it, so
	// a mail becomes a ticket within seconds rather than PollInterval.
	IDLE bool
	// MaxAttempts is how many failed ingests quarantine a mail; default 5.
	MaxAttempts int
	// BatchSize is how many messages one FETCH asks for, and one
	// IngestBatch stores; default 100. A batch also holds at most 16 MB of
	// mail (by the sizes the server reports), and two batches are in memory
	// at once: one stored while the next is fetched.
	BatchSize int
	// CommandTimeout is how long the IMAP server may stay silent while a
	// reply is due (the connection is then dropped and made again); it
	// counts silence, so a long FETCH that keeps streaming is not cut. It
	// also bounds one ingest and one store write. Default 1m: Gmail answers
	// in seconds, and a minute leaves room for a slow SEARCH or SELECT on
	// a very large mailbox.
	CommandTimeout time.Duration
	// Tokens hands out the accounts' access tokens. Required. The daemon
	// shares one Registry with the relay, so a refresh token Google
	// rotates while fetching is the one sending uses next; it also reports
	// token refreshes to metrics and records a revoked grant on the
	// account.
	Tokens *oauth.Registry
	// Holder is the owner token in this fetcher's lease values; default
	// random. The host name and pid are added (host:pid:token), so a
	// process on the same host can tell that the holder is gone. Two
	// Fetchers sharing one Redis must have different tokens.
	Holder string
	// Logger receives the fetcher's logs (keys account, uid, ticket); nil
	// means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// SentFolder also reads the account's Sent folder (found by its \Sent
	// attribute, RFC 6154) at every poll, from the first poll with it on,
	// and adds each mail there that answers a ticket as a comment by the
	// agent (tickets.Source.Agent): an answer written in Gmail itself.
	SentFolder bool
	// ClientID is sent with the IMAP ID command (Google asks clients to
	// identify themselves); nil sends name "mailgate".
	ClientID *imap.IDData

	// The hooks below report to metrics (package metrics builds them);
	// nil ones are skipped. They are called from the account's worker and
	// must not block.

	// OnPoll is called after each search for new mail, with what the
	// session did since the previous call (the initial import included),
	// how long the search and its ingests took, and its error; and once
	// when a session fails before it could poll (connect, login, initial
	// import), with that error. Work cut short by shutdown or a lost lease
	// is reported with took 0 and a nil error: its mail counts, its time
	// says nothing about the account.
	OnPoll func(account string, r Report, took time.Duration, err error)
	// OnSuppressed is called for each mail the loop rules kept from
	// becoming a ticket or comment, with the reason (tickets.Noise*).
	OnSuppressed func(account, reason string)
}

func (o *Options) setDefaults() {
	if o.IMAPAddr == "" {
		o.IMAPAddr = "imap.gmail.com:993"
	}
	if o.TLSMode == "" {
		o.TLSMode = tlsmode.Implicit
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Minute
	}
	if o.IdleRestart <= 0 {
		o.IdleRestart = 25 * time.Minute
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.StartSpread <= 0 {
		o.StartSpread = 30 * time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 5 * time.Minute
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 100
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ClientID == nil {
		o.ClientID = &imap.IDData{Name: "mailgate", Vendor: "mailgate"}
	}
}

func (o *Options) validate() error {
	switch o.TLSMode {
	case tlsmode.Implicit, tlsmode.StartTLS, tlsmode.Plain:
	default:
		return fmt.Errorf("imapfetch: unknown TLS mode %q (want implicit, starttls or plain)", o.TLSMode)
	}
	if o.Tokens == nil {
		return errors.New("imapfetch: Options.Tokens is required")
	}
	return nil
}

// AccountStore is the part of *accounts.Store the fetcher uses.
type AccountStore interface {
	List(ctx context.Context) ([]*accounts.Account, error)
	Get(ctx context.Context, email string) (*accounts.Account, error)
	Cursor(ctx context.Context, email string) (accounts.Cursor, error)
	SetCursor(ctx context.Context, email string, c accounts.Cursor) error
	SentCursor(ctx context.Context, email string) (accounts.Cursor, error)
	SetSentCursor(ctx context.Context, email string, c accounts.Cursor) error
	MarkImportDone(ctx context.Context, email string) error
	RecordPoll(ctx context.Context, email string, imported int) error
	Attempt(ctx context.Context, email, mailbox string, uidValidity, uid uint32) (int, error)
	ClearAttempts(ctx context.Context, email, mailbox string, uidValidity uint32, uids ...uint32) error
	AddQuarantined(ctx context.Context, email string) error
	AcquireLease(ctx context.Context, email string, me accounts.Holder, ttl time.Duration) (accounts.Lease, error)
	ReleaseLease(ctx context.Context, email string, me accounts.Holder) error
}

// changeNotifier is the optional part of AccountStore that tells Run about
// connects and disconnects at once instead of at the next PollInterval.
type changeNotifier interface {
	Changed(ctx context.Context) <-chan struct{}
}

// TicketStore is the part of *tickets.Store the fetcher uses.
type TicketStore interface {
	IngestBatch(ctx context.Context, mails []tickets.BatchMail) []tickets.BatchResult
	Quarantine(ctx context.Context, raw []byte, account string, uid uint32, reason string) error
}

// Report says what one PollOnce did.
type Report struct {
	Fetched       int // messages fetched from the server
	InitialImport int // of which by the initial import (the N most recent existing mails)
	Created       int // new tickets
	Comments      int // mails added to existing tickets
	Duplicates    int // mails ingested before (Message-ID, else X-GM-MSGID, dedupe)
	Suppressed    int // mails the loop rules kept from opening tickets
	Quarantined   int // poison mails set aside
	Errors        int // mails that failed and will be retried
	Skipped       int // mails of the Sent folder that joined no ticket, or that mailgate sent
}

// sub returns what r counted beyond o.
func (r Report) sub(o Report) Report {
	return Report{
		Fetched:       r.Fetched - o.Fetched,
		InitialImport: r.InitialImport - o.InitialImport,
		Created:       r.Created - o.Created,
		Comments:      r.Comments - o.Comments,
		Duplicates:    r.Duplicates - o.Duplicates,
		Suppressed:    r.Suppressed - o.Suppressed,
		Quarantined:   r.Quarantined - o.Quarantined,
		Errors:        r.Errors - o.Errors,
		Skipped:       r.Skipped - o.Skipped,
	}
}

// ErrLeaseHeld is matched by PollOnce's *LeaseHeldError.
var ErrLeaseHeld = errors.New("imapfetch: another mailgate process is polling this account")

// LeaseHeldError is returned by PollOnce when another fetcher (usually the
// running daemon) holds the account's lease: it says which and until when.
type LeaseHeldError struct {
	Account string
	Lease   accounts.Lease
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("imapfetch: lease of %s held by %s", e.Account, e.Lease)
}

// Unwrap makes the error match ErrLeaseHeld.
func (e *LeaseHeldError) Unwrap() error { return ErrLeaseHeld }

// ErrNotConnected is returned by PollOnce for an account that is not in
// state connected.
var ErrNotConnected = errors.New("imapfetch: account is not connected")

// Fetcher runs the workers. Create it with New.
type Fetcher struct {
	acc  AccountStore
	st   TicketStore
	opts Options
	log  *slog.Logger
	me   accounts.Holder // in lease values
	// redis logs one line when Redis stops answering the workers (their
	// leases, the account list) and one when it is back, not one per
	// account and retry.
	redis *health.Reporter
	share *share // set by Run when the store can share accounts; nil limits nothing
	// leases renews the leases the workers hold.
	leases keeper
	// polls records the polls that found nothing new.
	polls recorder
	// starting holds the sessions between their start and first poll.
	starting slots
	// parse is mailparse.Parse; tests make it panic.
	parse func(raw []byte) *mailparse.Parsed
	// batchBytes is maxBatchBytes; tests make it small.
	batchBytes int64
}

// New returns a Fetcher reading accounts from acc and writing mail to st.
func New(acc AccountStore, st TicketStore, opts Options) *Fetcher {
	opts.setDefaults()
	f := &Fetcher{acc: acc, st: st, opts: opts, log: opts.Logger, me: accounts.NewHolder(opts.Holder),
		parse: mailparse.Parse, batchBytes: maxBatchBytes,
		redis: health.New(health.Options{Logger: opts.Logger, Part: "imapfetch", Dependency: "redis",
			Paused: "fetching is paused; new mail stays unread in Gmail until it is back"})}
	f.leases.f, f.polls.f, f.polls.closing = f, f, make(chan struct{})
	f.starting = make(slots, maxStarting)
	return f
}

// handle is a running worker as the supervisor sees it.
type handle struct {
	email    string
	cancel   context.CancelFunc
	stopping bool // the supervisor cancelled it
}

// Run supervises one worker per connected account until ctx ends: it lists
// the accounts at start, whenever the account store reports a change, and
// every PollInterval; starts workers for connected accounts and stops those
// of accounts that are no longer connected. One failing account never
// stops the others. When ctx ends Run waits for the workers, which finish
// the mail they are ingesting (and its \Seen) before returning; it returns
// nil then, or an error for invalid Options.
func (f *Fetcher) Run(ctx context.Context) error {
	if err := f.opts.validate(); err != nil {
		return err
	}
	var changed <-chan struct{}
	if n, ok := f.acc.(changeNotifier); ok {
		changed = n.Changed(ctx)
	}
	tick := time.NewTicker(f.opts.PollInterval)
	defer tick.Stop()

	workers := make(map[string]*handle)
	exited := make(chan *handle)
	var wg sync.WaitGroup

	reconcile := func() {
		start := time.Now()
		list, err := f.acc.List(ctx)
		f.redis.Report(ctx, start, err)
		if err != nil {
			return
		}
		want := make(map[string]bool, len(list))
		for _, a := range list {
			if a.State == accounts.StateConnected {
				want[a.Email] = true
			}
		}
		f.share.setTotal(len(want))
		for email, h := range workers {
			if !want[email] && !h.stopping {
				f.log.Info("imapfetch: stopping worker", "account", email)
				h.stopping = true
				h.cancel()
			}
		}
		var fresh []func()
		for email := range want {
			if _, ok := workers[email]; ok {
				continue // running, or still stopping: started after it exits
			}
			wctx, cancel := context.WithCancel(ctx)
			h := &handle{email: email, cancel: cancel}
			workers[email] = h
			wg.Add(1)
			fresh = append(fresh, func() {
				go func() {
					defer wg.Done()
					defer cancel()
					f.newWorker(email).run(wctx)
					select {
					case exited <- h:
					case <-ctx.Done():
					}
				}()
			})
		}
		f.stagger(ctx, fresh)
	}

	if st, ok := f.acc.(sharer); ok {
		f.share = newShare(st, f)
	}
	reconcile()
	shared := f.runShare(ctx)
	for {
		select {
		case <-ctx.Done():
			f.log.Info("imapfetch: shutting down, finishing in-flight mail", "workers", len(workers))
			wg.Wait()
			f.polls.stop()
			shared()
			return nil
		case _, ok := <-changed:
			if !ok {
				changed = nil
				continue
			}
			reconcile()
		case <-tick.C:
			reconcile()
		case h := <-exited:
			if workers[h.email] == h {
				delete(workers, h.email)
			}
			// A worker the supervisor stopped may be wanted again (a quick
			// disconnect/reconnect). One that stopped by itself (revoked
			// access) waits for a change or the next tick, so a worker
			// that keeps failing at once cannot spin.
			if h.stopping {
				reconcile()
			}
		}
	}
}

// maxStarting is how many sessions may be between their start and their
// first poll at once.
const maxStarting = 32

// slots is a counting semaphore.
type slots chan struct{}

// acquire takes a slot, and reports false if ctx ended first.
func (s slots) acquire(ctx context.Context) bool {
	select {
	case s <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s slots) release() { <-s }

// maxStartGap is the longest wait between two of the first logins Run
// spreads over Options.StartSpread.
const maxStartGap = 10 * time.Millisecond

// stagger calls each of starts, spaced evenly over at most StartSpread and
// at most maxStartGap apart, from a goroutine of its own; the first at
// once. Once ctx ends it calls the rest without waiting.
func (f *Fetcher) stagger(ctx context.Context, starts []func()) {
	if len(starts) == 0 {
		return
	}
	gap := min(f.opts.StartSpread/time.Duration(len(starts)), maxStartGap)
	if len(starts) > 1 {
		f.log.Info("imapfetch: starting workers", "workers", len(starts), "over", (gap * time.Duration(len(starts)-1)).Round(time.Millisecond))
	}
	starts[0]()
	if len(starts) == 1 {
		return
	}
	go func() {
		next := time.Now()
		for _, start := range starts[1:] {
			// Against a schedule, not gap after gap, so the window holds
			// however late the timer wakes.
			next = next.Add(gap)
			sleep(ctx, time.Until(next))
			start()
		}
	}()
}

// PollOnce connects to one account, runs the initial import if it is due,
// fetches new mail once, and logs out. progress, if not nil, is called
// after each mail with the number done and the number known so far (the
// import's N first, then the new mail found after it), for the CLI's
// "N/50". It takes the account's lease, also from a process on this host
// that is gone, and fails with a *LeaseHeldError at once when another
// fetcher holds it.
func (f *Fetcher) PollOnce(ctx context.Context, email string, progress func(done, total int)) (Report, error) {
	if err := f.opts.validate(); err != nil {
		return Report{}, err
	}
	a, err := f.acc.Get(ctx, email)
	if err != nil {
		return Report{}, err
	}
	if a.State != accounts.StateConnected {
		return Report{}, fmt.Errorf("%w: %s is %s", ErrNotConnected, a.Email, a.State)
	}
	w := f.newWorker(a.Email)
	l, err := f.acc.AcquireLease(ctx, w.email, f.me, f.opts.LeaseTTL)
	if err != nil {
		return Report{}, err
	}
	if !l.Mine {
		return Report{}, &LeaseHeldError{Account: w.email, Lease: l}
	}
	if l.TookOver != (accounts.Holder{}) {
		w.log.Info("imapfetch: took over the account lease from " + l.TookOver.Process() + ": no such process runs on this host any more")
	}
	lctx, release := w.holdLease(ctx)
	defer release()

	return w.session(lctx, true, progress)
}
