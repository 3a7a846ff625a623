package faults

import (
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/faultproxy"
)

// TestConnectionsCut cuts mailgate's connections to the mailbox and to the
// smarthost at the worst moments, through the fault proxy: in the middle
// of a FETCH (closed, reset, stalled), just before the UID STORE that
// marks mail \Seen, in the middle of DATA, on the final dot before the
// smarthost's 250 reaches mailgate, and right after that 250. Sending via
// Gmail is off, so that every notification goes through the smarthost,
// whose SMTP the proxy reads.
func TestConnectionsCut(t *testing.T) {
	w := newWorld(t, standalone)
	w.mailgate("accounts", "set", account, "--send-via-gmail=false")
	p := w.serve()
	w.waitPolled(p.Started, 15*time.Second)

	imapFetch := []byte("BODY[] {")
	cases := []struct {
		name   string
		px     *faultproxy.Proxy
		rule   faultproxy.Rule
		stall  time.Duration // for Stall: how long before the connection is closed
		mails  int
		notifs int
		// unconfirmed: the smarthost has the message but mailgate never
		// got its 250 (RFC 1047): a second copy is the at-least-once case.
		unconfirmed bool
	}{
		{name: "IMAP closed mid-FETCH", px: w.imap, mails: 5,
			rule: faultproxy.Rule{Dir: faultproxy.ToClient, Match: imapFetch, After: 300, Action: faultproxy.Close}},
		{name: "IMAP reset mid-FETCH", px: w.imap, mails: 5,
			rule: faultproxy.Rule{Dir: faultproxy.ToClient, Match: imapFetch, After: 300, Action: faultproxy.Reset}},
		{name: "IMAP stalled mid-FETCH", px: w.imap, mails: 5, stall: 3 * time.Second,
			rule: faultproxy.Rule{Dir: faultproxy.ToClient, Match: imapFetch, After: 300, Action: faultproxy.Stall}},
		{name: "IMAP closed before UID STORE", px: w.imap, mails: 5,
			rule: faultproxy.Rule{Dir: faultproxy.ToServer, Match: []byte("UID STORE"), Before: true, Action: faultproxy.Close}},
		{name: "SMTP reset mid-DATA", px: w.smtp, notifs: 3,
			rule: faultproxy.Rule{Dir: faultproxy.ToServer, Match: []byte("DATA\r\n"), After: 400, Action: faultproxy.Reset}},
		{name: "SMTP closed after the final dot", px: w.smtp, notifs: 1, unconfirmed: true,
			rule: faultproxy.Rule{Dir: faultproxy.ToServer, Match: []byte("\r\n.\r\n"), Action: faultproxy.Close}},
		{name: "SMTP closed after the 250", px: w.smtp, notifs: 3,
			rule: faultproxy.Rule{Dir: faultproxy.ToClient, Match: []byte("250 2.0.0 Ok: queued"), Then: []byte("\r\n"), Action: faultproxy.Close}},
	}
	for _, tc := range cases {
		w.phase(tc.name, func(t *testing.T) {
			_, before := w.led.snapshot()
			tr := tc.px.Arm(tc.rule)
			defer tc.px.Disarm()
			for range tc.mails {
				if err := w.sendMail(); err != nil {
					t.Fatal(err)
				}
			}
			for range tc.notifs {
				w.sendNotification(w.ctx)
			}
			if !tr.Wait(20 * time.Second) {
				t.Fatalf("the proxy never saw %q %s: nothing was cut", tc.rule.Match, tc.rule.Dir)
			}
			healed := tr.At()
			if tc.stall > 0 {
				time.Sleep(tc.stall)
				tc.px.Release()
				healed = time.Now()
			}
			o, drained := w.drain()
			if tc.unconfirmed {
				for id, n := range o.notifs {
					if before[id] != nil {
						continue
					}
					for _, rc := range n.Rcpts {
						w.allow[fakesmtp.Delivery{MessageID: id, Rcpt: rc}] = "the smarthost took it, the connection was cut before its 250 reached mailgate"
					}
				}
			}
			w.check(o)
			w.assertCaughtUp(tc.name, healed, drained)
		})
	}
}
