package imapfetch

import (
	"context"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/fakegmail"
)

// attemptKeys are the counts of failed tries the store holds.
func (e *env) attemptKeys() []string {
	e.t.Helper()
	keys, err := e.rdb.Keys(context.Background(), "*attempts*").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return keys
}

// A poll that succeeds after failures leaves nothing of them behind, in
// `fetch --once` (PollOnce) as in serve, and whoever counted the failures:
// the mail's count of failed tries is gone once it went through, and a
// throttle that has passed is cleared. Before, only a serve worker that had
// itself counted a failure cleared it; a count taken by another run stayed
// for its 72 hours.
func TestSuccessClearsFailures(t *testing.T) {
	for _, how := range []string{"fetch --once after fetch --once", "serve after fetch --once", "serve alone"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t, fakegmail.Options{})
			e.connect(alice, 0)
			fs := &flakyStore{Store: e.st, failTimes: map[string]int{"m1." + alice: 1}}
			o := e.options()
			first := New(e.acc, fs, o)
			pollOnce(t, first, alice)
			if how != "serve alone" {
				e.deliver(alice, 1, false)
				if rep := pollOnce(t, first, alice); rep.Errors != 1 {
					t.Fatalf("poll = %+v, want the mail failed", rep)
				}
				if keys := e.attemptKeys(); len(keys) != 1 {
					t.Fatalf("attempt counts %v after a failure, want one", keys)
				}
			}
			// Gmail throttled the account meanwhile; that has passed.
			if err := e.acc.SetThrottled(context.Background(), alice, time.Now().Add(-time.Second), "throttled"); err != nil {
				t.Fatal(err)
			}

			if how == "fetch --once after fetch --once" {
				if rep := pollOnce(t, New(e.acc, fs, o), alice); rep.Created != 1 || rep.Errors != 0 {
					t.Fatalf("second fetch --once = %+v, want the mail as a ticket", rep)
				}
			} else {
				stop := e.start(New(e.acc, fs, o))
				defer stop()
				if how == "serve alone" {
					// Failed and retried by one worker, in later polls.
					waitFor(t, 10*time.Second, "a first poll", func() bool { return e.account(alice).ThrottledUntil.IsZero() })
					e.deliver(alice, 1, false)
				}
				waitFor(t, 10*time.Second, "the ticket", func() bool { return e.ticketCount() == 1 })
				fs.mu.Lock()
				tries := fs.calls
				fs.mu.Unlock()
				if tries != 2 {
					t.Fatalf("the mail was handed to the store %d times, want 2 (failed, then stored)", tries)
				}
			}
			waitFor(t, 5*time.Second, "no attempt count left", func() bool { return len(e.attemptKeys()) == 0 })
			// serve clears the throttle once its poll has ended, a moment
			// after the ticket is there.
			waitFor(t, 5*time.Second, "the throttle cleared", func() bool { return e.account(alice).ThrottledUntil.IsZero() })
			if a := e.account(alice); !a.ThrottledUntil.IsZero() || a.ThrottleReason != "" || a.LastPoll.IsZero() {
				t.Errorf("account after a good poll: throttled until %v (%q), last poll %v; want no throttle and the poll recorded",
					a.ThrottledUntil, a.ThrottleReason, a.LastPoll)
			}
		})
	}
}
