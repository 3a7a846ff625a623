package throttle

import (
	"fmt"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-smtp"
)

func TestRecognises(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		imap  bool
		want  Reason
		wait  time.Duration
		asked bool
		is    bool
	}{
		{"connections", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlert, Text: "Too many simultaneous connections. (Failure)"}, true, TooManyConnections, DefaultShort, false, true},
		{"throttled", &imap.Error{Type: imap.StatusResponseTypeNo, Code: "THROTTLED", Text: "Request throttled"}, true, Throttled, DefaultShort, false, true},
		{"bandwidth", &imap.Error{Type: imap.StatusResponseTypeNo, Code: "OVERQUOTA", Text: "Account exceeded command or bandwidth limits. (Failure)"}, true, Bandwidth, DefaultBandwidth, false, true},
		{"bandwidth asked", &imap.Error{Type: imap.StatusResponseTypeNo, Code: "OVERQUOTA", Text: "Account exceeded command or bandwidth limits. Try again in 20 minutes. (Failure)"}, true, Bandwidth, 20 * time.Minute, true, true},
		{"full mailbox", &imap.Error{Type: imap.StatusResponseTypeNo, Code: "OVERQUOTA", Text: "Quota exceeded"}, true, "", 0, false, false},
		{"bad token", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed, Text: "Invalid credentials (Failure)"}, true, "", 0, false, false},
		{"421", &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Try again later, closing connection. a1b2.3 - gsmtp"}, false, TryAgainLater, DefaultShort, false, true},
		{"454", &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many login attempts, please try again later. a1.2 - gsmtp"}, false, TooManyLogins, DefaultShort, false, true},
		{"daily limit", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 4, 5}, Message: "Daily user sending limit exceeded."}, false, "", 0, false, false},
		{"our own 421", &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Idle timeout, bye bye"}, false, "", 0, false, false},
	}
	for _, c := range cases {
		err := fmt.Errorf("wrapped: %w", c.err)
		var got Throttle
		var ok bool
		if c.imap {
			got, ok = IMAP(err)
		} else {
			got, ok = SMTP(err)
		}
		if ok != c.is || ok && (got.Reason != c.want || got.Wait != c.wait || got.Asked != c.asked) {
			t.Errorf("%s: = %+v, %v; want %q for %s (asked %v), %v", c.name, got, ok, c.want, c.wait, c.asked, c.is)
		}
	}
}

func TestUntilJitters(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	th := Throttle{Reason: Bandwidth, Wait: time.Hour}
	seen := map[time.Time]bool{}
	for range 20 {
		u := th.Until(now)
		if u.Before(now.Add(time.Hour)) || u.After(now.Add(66*time.Minute)) {
			t.Fatalf("Until = %s, want between 1h and 1h06m after now", u.Sub(now))
		}
		seen[u] = true
	}
	if len(seen) < 2 {
		t.Error("Until gave the same time 20 times: no jitter")
	}
}
