package faults

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/smtprelay"
)

// TestServeKilled kills `mailgate serve` (-9) while it imports customer
// mail, and again right after the relay answered a burst of notifications
// with 250, and starts it again each time: every mail becomes one ticket,
// every accepted notification reaches each recipient once — or twice when
// the kill fell between the peer's 250 and the record of it, the one
// at-least-once window, which is counted.
func TestServeKilled(t *testing.T) {
	w := newWorld(t, standalone)
	p := w.serve()
	w.waitPolled(p.Started, 15*time.Second)

	w.phase("mid-import", func(t *testing.T) {
		l := w.startLoad(30*time.Millisecond, 0)
		w.underWay(50, 0)
		p.Kill()
		w.unrecorded()
		time.Sleep(time.Second)
		p = w.serve()
		healed := p.Started
		w.endLoad(l, 5*time.Second, "serve kill -9 mid-import, then restarted", healed, true, false, time.Time{})
	})
	w.phase("after a burst of 250s", func(t *testing.T) {
		w.burst(40)
		p.Kill()
		w.unrecorded()
		time.Sleep(time.Second)
		p = w.serve()
		healed := p.Started
		o, _ := w.drain()
		n := w.check(o)
		w.t.Logf("kill -9 right after 40 accepted notifications: %d copies in the at-least-once window", n)
		w.assertResumed("serve kill -9 after a burst of 250s, then restarted", healed, o, false, true, time.Time{})
	})
}

// unrecorded adds to the allowance, right after serve was killed, the
// copies a peer has accepted that the queue does not record as delivered:
// the kill fell between the peer's 250 and the record. It reads the queue
// as an operator does (`mailgate queue list --json`): a message no longer
// listed is finished, and a listed one gives each recipient's state in
// "rcpts".
func (w *world) unrecorded() {
	w.t.Helper()
	o := w.observe()
	var listing struct {
		Messages []struct {
			ID        string `json:"id"`
			MessageID string `json:"message_id"`
			Rcpts     []struct {
				Addr  string `json:"addr"`
				State string `json:"state"`
			} `json:"rcpts"`
		} `json:"messages"`
	}
	if err := json.Unmarshal([]byte(w.mailgate("queue", "list", "--json", "--limit", "10000")), &listing); err != nil {
		w.t.Fatalf("queue list --json: %v", err)
	}
	n0 := len(w.allow)
	for _, m := range listing.Messages {
		n := o.notifs[m.MessageID]
		if n == nil {
			continue
		}
		delivered := map[string]bool{}
		for _, r := range m.Rcpts {
			if r.State == string(smtprelay.RcptDelivered) {
				delivered[strings.ToLower(r.Addr)] = true
			}
		}
		for _, rc := range n.Rcpts {
			d := fakesmtp.Delivery{MessageID: n.MessageID, Rcpt: rc}
			if o.copies[d] > 0 && !delivered[strings.ToLower(rc)] {
				w.allow[d] = fmt.Sprintf("accepted by the peer at %s, not recorded in queue %s when serve was killed", o.first[d].Format("15:04:05.000"), m.ID)
			}
		}
	}
	if n := len(w.allow) - n0; n > 0 {
		w.t.Logf("the kill fell between the peer's 250 and the record for %d copies", n)
	}
}
