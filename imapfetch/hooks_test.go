package imapfetch

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tickets"
)

type pollCall struct {
	account string
	r       Report
	took    time.Duration
	err     error
}

// hookLog records what a Fetcher tells the hooks in its Options, and the
// refreshes its token registry reports.
type hookLog struct {
	mu         sync.Mutex
	polls      []pollCall
	suppressed []string // account + " " + reason
	refreshes  []error
}

func (h *hookLog) install(e *env, o *Options) {
	o.OnPoll = func(account string, r Report, took time.Duration, err error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.polls = append(h.polls, pollCall{account, r, took, err})
	}
	o.OnSuppressed = func(account, reason string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.suppressed = append(h.suppressed, account+" "+reason)
	}
	o.Tokens = e.tokens(func(account string, err error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if account != alice {
			panic("token refresh reported for " + account)
		}
		h.refreshes = append(h.refreshes, err)
	})
}

// add counts o into r.
func (r *Report) add(o Report) {
	r.Fetched += o.Fetched
	r.InitialImport += o.InitialImport
	r.Created += o.Created
	r.Comments += o.Comments
	r.Duplicates += o.Duplicates
	r.Suppressed += o.Suppressed
	r.Quarantined += o.Quarantined
	r.Errors += o.Errors
}

// newHookedEnv is an env with alice connected and Options whose hooks
// report to the returned hookLog.
func newHookedEnv(t *testing.T) (*env, *hookLog, Options) {
	t.Helper()
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	h := new(hookLog)
	opts := e.options()
	h.install(e, &opts)
	return e, h, opts
}

// take returns what was recorded so far and forgets it.
func (h *hookLog) take() (polls []pollCall, suppressed []string, refreshes []error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	polls, suppressed, refreshes = h.polls, h.suppressed, h.refreshes
	h.polls, h.suppressed, h.refreshes = nil, nil, nil
	return
}

func autoReply(to string) []byte {
	return []byte("From: Customer <away@customer.test>\r\nTo: " + to + "\r\nSubject: Out of office\r\n" +
		"Message-ID: <away.1@customer.test>\r\nAuto-Submitted: auto-replied\r\n" +
		"Date: Tue, 24 Nov 2026 10:00:00 +0100\r\n\r\nI am away.\r\n")
}

func TestHooksReportPollsSuppressionsAndRefreshes(t *testing.T) {
	e, h, opts := newHookedEnv(t)
	f := New(e.acc, e.st, opts)

	pollOnce(t, f, alice)
	polls, _, refreshes := h.take()
	if len(polls) != 1 || polls[0] != (pollCall{alice, Report{}, polls[0].took, nil}) || polls[0].took <= 0 {
		t.Errorf("OnPoll calls for an empty INBOX = %+v, want one for %s with nothing, a duration and no error", polls, alice)
	}
	if len(refreshes) != 1 || refreshes[0] != nil || e.oa.TokenRequests() != 1 {
		t.Errorf("refreshes reported = %v after %d token requests, want one successful refresh", refreshes, e.oa.TokenRequests())
	}

	e.deliver(alice, 1, false)
	e.deliver(alice, 2, false)
	if _, err := e.gm.Deliver(alice, autoReply(alice), false); err != nil {
		t.Fatal(err)
	}
	rep := pollOnce(t, f, alice)
	if want := (Report{Fetched: 3, Created: 2, Suppressed: 1}); rep != want {
		t.Fatalf("PollOnce = %+v, want %+v", rep, want)
	}
	polls, suppressed, refreshes := h.take()
	var sum Report
	for _, p := range polls {
		if p.account != alice || p.err != nil || p.took <= 0 {
			t.Errorf("OnPoll(%s, %+v, %v, %v), want %s, a duration, no error", p.account, p.r, p.took, p.err, alice)
		}
		sum.add(p.r)
	}
	if sum != rep {
		t.Errorf("OnPoll reports add up to %+v, want PollOnce's %+v", sum, rep)
	}
	if want := []string{alice + " " + tickets.NoiseAutoReply}; !slices.Equal(suppressed, want) {
		t.Errorf("OnSuppressed calls = %q, want %q", suppressed, want)
	}
	// The access token outlives the PollOnce: the registry keeps one
	// source per account.
	if len(refreshes) != 0 || e.oa.TokenRequests() != 1 {
		t.Errorf("refreshes reported = %v after %d token requests, want none: the access token is still good", refreshes, e.oa.TokenRequests())
	}
}

// A session that fails before it polls is a failed poll, and a refresh
// answered with invalid_grant a failed refresh.
func TestHooksReportRevokedToken(t *testing.T) {
	e, h, opts := newHookedEnv(t)
	f := New(e.acc, e.st, opts)

	e.oa.RevokeAll(alice)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := f.PollOnce(ctx, alice, nil); !errors.Is(err, oauth.ErrInvalidGrant) {
		t.Fatalf("PollOnce with a revoked token = %v, want invalid_grant", err)
	}
	polls, suppressed, refreshes := h.take()
	if len(polls) != 1 || polls[0].r != (Report{}) || !errors.Is(polls[0].err, oauth.ErrInvalidGrant) {
		t.Errorf("OnPoll calls = %+v, want one with the invalid_grant error", polls)
	}
	if len(refreshes) != 1 || !errors.Is(refreshes[0], oauth.ErrInvalidGrant) {
		t.Errorf("refreshes reported = %v, want one invalid_grant", refreshes)
	}
	if len(suppressed) != 0 {
		t.Errorf("OnSuppressed calls = %q, want none", suppressed)
	}
}

// The daemon's workers report each poll; a cached access token is no
// refresh.
func TestHooksFromRunningWorker(t *testing.T) {
	e, h, opts := newHookedEnv(t)
	e.start(New(e.acc, e.st, opts))

	e.deliver(alice, 1, false)
	waitFor(t, 10*time.Second, "ticket", func() bool { return e.ticketCount() == 1 })
	var created, refreshed int
	waitFor(t, 10*time.Second, "OnPoll with the ticket", func() bool {
		polls, _, refreshes := h.take()
		refreshed += len(refreshes)
		for _, p := range polls {
			if p.err != nil || p.took <= 0 {
				t.Errorf("OnPoll(%s, %+v, %v, %v) from a healthy worker", p.account, p.r, p.took, p.err)
			}
			created += p.r.Created
		}
		return created == 1
	})
	if refreshed != 1 {
		t.Errorf("%d refreshes reported, want 1: the access token lasts across polls", refreshed)
	}
}
