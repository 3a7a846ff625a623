package smtprelay

import (
	"context"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/throttle"
)

// TestGmailThrottleDefersWithoutCountingTheTry: when Gmail answers the
// account with one of its throttling replies (454 4.7.0 at AUTH, 421 4.7.0
// at the end of DATA), the message waits for the account's Gmail until the
// throttle ends: its attempt count does not grow, it neither bounces nor
// goes direct (the Workspace account could go direct), the account shows
// the throttle, and mail queued meanwhile does not touch Gmail. Afterwards
// both go via Gmail once and the throttle is cleared.
func TestGmailThrottleDefersWithoutCountingTheTry(t *testing.T) {
	cases := []struct {
		name   string
		reason throttle.Reason
		inject func(w *relayWorld)
		lift   func(w *relayWorld)
	}{
		{"454 too many logins", throttle.TooManyLogins,
			func(w *relayWorld) { w.gmail.SetAuthError(wsAcct, fakesmtp.ErrTooManyLogins) },
			func(w *relayWorld) { w.gmail.SetAuthError(wsAcct, nil) }},
		{"421 try again later", throttle.TryAgainLater,
			func(w *relayWorld) { w.gmail.FailNext(1, fakesmtp.ErrTryAgainLater) },
			func(*relayWorld) {}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			w := newRelayWorld(t, 500)
			tc.inject(w)
			m := w.queueAndTry(wsAcct, notif(wsAcct, "[#7] We got your request"))
			if m.State != StateDeferred || m.Route != RouteDeferred {
				t.Fatalf("after Gmail's %s: state %s route %s, want deferred", tc.name, m.State, m.Route)
			}
			if m.Attempts != 0 {
				t.Errorf("attempts = %d after a throttled try, want 0: Gmail's limit is not a failed try", m.Attempts)
			}
			if wait := m.NextAttempt.Sub(w.clock.t); wait < throttle.DefaultShort || wait > throttle.DefaultShort*11/10 {
				t.Errorf("next attempt in %s, want Gmail's default wait of about %s", wait, throttle.DefaultShort)
			}
			if n := len(w.mx.Received()); n != 0 {
				t.Errorf("MX got %d messages: a throttled message went direct", n)
			}
			if len(w.eventsOf("delivery.failed")) != 0 {
				t.Error("a throttled message was reported as failed")
			}
			a, err := w.acc.Get(ctx, wsAcct)
			if err != nil {
				t.Fatal(err)
			}
			if a.ThrottleReason != string(tc.reason) || a.ThrottleNote(w.clock.t) == "" {
				t.Errorf("account after the throttle: reason %q note %q, want %q shown", a.ThrottleReason, a.ThrottleNote(w.clock.t), tc.reason)
			}

			// Mail queued while the throttle lasts waits too, without a
			// connection to Gmail and without a counted try.
			before := len(w.gmail.Transcripts())
			m2 := w.queueAndTry(wsAcct, notif(wsAcct, "[#8] Another one"))
			if len(w.gmail.Transcripts()) != before {
				t.Error("relay connected to Gmail while the account is throttled")
			}
			if m2.State != StateDeferred || m2.Attempts != 0 || m2.NextAttempt.Before(a.ThrottledUntil) {
				t.Errorf("mail queued while throttled: %+v, want deferred until %s with no attempt counted", m2, a.ThrottledUntil)
			}

			tc.lift(w)
			w.clock.t = a.ThrottledUntil.Add(time.Second)
			if n, _ := w.q.Promote(ctx); n != 2 {
				t.Fatalf("promoted %d, want 2", n)
			}
			w.tryNext()
			w.tryNext()
			for _, id := range []string{m.ID, m2.ID} {
				got, _ := w.q.Get(ctx, id, false)
				if got.State != StateSent || got.Route != RouteGmail || got.Attempts != 1 {
					t.Errorf("after the throttle: %s state %s route %s attempts %d, want sent via Gmail at the first counted try", id, got.State, got.Route, got.Attempts)
				}
			}
			if n := len(w.gmail.Received()); n != 2 {
				t.Errorf("Gmail received %d, want each message once", n)
			}
			if a, _ := w.acc.Get(ctx, wsAcct); !a.ThrottledUntil.IsZero() {
				t.Errorf("throttle still recorded after Gmail took the mail: %s", a.ThrottleNote(w.clock.t))
			}
		})
	}
}
