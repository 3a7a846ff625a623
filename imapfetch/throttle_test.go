package imapfetch

import (
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/throttle"
)

// testClock is a clock a test moves forward.
type testClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// TestGmailThrottling: for each of Gmail's throttling replies the worker
// records "throttled until" on the account (Google's default wait for that
// reply), stops contacting Gmail while it lasts, and once it has passed
// fetches the waiting mail and clears the throttle.
func TestGmailThrottling(t *testing.T) {
	cases := []struct {
		name   string
		reason throttle.Reason
		wait   time.Duration
		// start makes Gmail throttle the account; stop lifts it.
		start func(e *env) (stop func())
	}{
		{"too many connections", throttle.TooManyConnections, throttle.DefaultShort, func(e *env) func() {
			// Another client holds the one connection the fake allows.
			c, err := imapclient.DialInsecure(e.addr, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Authenticate(oauth.NewXOAUTH2Client(alice, e.oa.IssueAccessToken(alice))); err != nil {
				t.Fatal(err)
			}
			return func() { c.Logout().Wait(); c.Close() }
		}},
		{"THROTTLED", throttle.Throttled, throttle.DefaultShort, func(e *env) func() {
			e.gm.SetCommandError(alice, fakegmail.ErrThrottled)
			return func() { e.gm.SetCommandError(alice, nil) }
		}},
		{"bandwidth", throttle.Bandwidth, throttle.DefaultBandwidth, func(e *env) func() {
			e.gm.SetCommandError(alice, fakegmail.ErrBandwidth)
			return func() { e.gm.SetCommandError(alice, nil) }
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, fakegmail.Options{MaxConnections: 1})
			e.connect(alice, 0)
			clk := &testClock{}
			o := e.options()
			o.Now = clk.Now
			stop := tc.start(e)
			f := New(e.acc, e.st, o)
			e.start(f)
			waitFor(t, 10*time.Second, "the throttle recorded on the account", func() bool {
				return e.account(alice).Throttled(clk.Now())
			})
			a := e.account(alice)
			if a.ThrottleReason != string(tc.reason) {
				t.Errorf("throttle reason = %q, want %q", a.ThrottleReason, tc.reason)
			}
			if left := a.ThrottledUntil.Sub(clk.Now()); left < tc.wait-time.Minute || left > tc.wait*11/10 {
				t.Errorf("throttled for %s, want about %s", left.Round(time.Second), tc.wait)
			}
			if a.ThrottleNote(clk.Now()) == "" {
				t.Error("ThrottleNote is empty while throttled")
			}

			// Without the throttle the worker would reconnect every
			// BackoffMax (100 ms): several times in a second.
			conns := e.gm.Connections()
			time.Sleep(time.Second)
			if n := e.gm.Connections() - conns; n != 0 {
				t.Errorf("%d connections to Gmail while throttled, want none", n)
			}

			stop()
			e.deliver(alice, 1, false)
			clk.Add(tc.wait * 2)
			waitFor(t, 10*time.Second, "the mail fetched after the throttle", func() bool { return e.ticketCount() == 1 })
			waitFor(t, 5*time.Second, "the throttle cleared", func() bool {
				return e.account(alice).ThrottledUntil.IsZero()
			})
		})
	}
}
