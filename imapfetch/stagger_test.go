package imapfetch

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/fakegmail"
)

// Many accounts at start do not all log in to Google in the same second:
// the first logins are spread over StartSpread, and every account has
// still polled soon after the window ends.
func TestStartSpreadsFirstLogins(t *testing.T) {
	const accounts = 300
	const spread = 1500 * time.Millisecond
	e := newEnv(t, fakegmail.Options{})
	emails := make([]string, accounts)
	for i := range emails {
		emails[i] = fmt.Sprintf("spread%03d@example.com", i)
		e.connect(emails[i], 0)
	}
	o := e.options()
	o.StartSpread = spread
	logins := func() int {
		n := 0
		for _, email := range emails {
			n += e.gm.Logins(email)
		}
		return n
	}

	start := time.Now()
	e.start(New(e.acc, e.st, o))
	var half, all time.Duration
	for all == 0 {
		if time.Since(start) > spread+30*time.Second {
			t.Fatalf("%d of %d accounts logged in %s after start", logins(), accounts, time.Since(start).Round(time.Millisecond))
		}
		n := logins()
		if half == 0 && n >= accounts/2 {
			half = time.Since(start)
		}
		if n >= accounts {
			all = time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("half of %d accounts logged in after %s, all after %s (spread %s)", accounts, half.Round(time.Millisecond), all.Round(time.Millisecond), spread)
	// Spread evenly, half would log in after spread/2 and the last at
	// the end of the window; a slow machine only makes them later.
	if half < spread/4 {
		t.Errorf("half of the accounts logged in %s after start; want them spread over %s", half.Round(time.Millisecond), spread)
	}
	if all < spread*3/4 {
		t.Errorf("every account logged in %s after start; want the logins spread over %s", all.Round(time.Millisecond), spread)
	}

	waitFor(t, spread+30*time.Second, "every account polled once", func() bool {
		list, err := e.acc.List(context.Background())
		if err != nil {
			return false
		}
		n := 0
		for _, a := range list {
			if a.LastPoll.After(start.Add(-time.Second)) {
				n++
			}
		}
		return n == accounts
	})
}
