package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/mgproc"
)

// outcome is what mailgate made of the ledger, as the helpdesk, the
// mailbox and the recipients see it.
type outcome struct {
	mails   []mail
	notifs  map[string]*notif
	tickets map[string]int       // Message-ID → ticket.created events
	created map[string]time.Time // Message-ID → its first ticket.created (Redis's clock)
	nTicket int64                // tickets in the store
	seen    map[imap.UID]bool
	copies  map[fakesmtp.Delivery]int       // via Gmail and via the smarthost
	first   map[fakesmtp.Delivery]time.Time // when the first copy was accepted
}

// observe reads the outcome now.
func (w *world) observe() outcome {
	w.t.Helper()
	o := outcome{tickets: map[string]int{}, created: map[string]time.Time{}, copies: map[fakesmtp.Delivery]int{}, first: map[fakesmtp.Delivery]time.Time{}}
	o.mails, o.notifs = w.led.snapshot()
	uids := make([]imap.UID, len(o.mails))
	for i, m := range o.mails {
		uids[i] = m.UID
	}
	var err error
	if o.seen, err = w.box.Seen(uids); err != nil {
		w.t.Fatalf("reading \\Seen from %s: %v", w.box.Name(), err)
	}
	w.read("the ticket events", func(ctx context.Context) error {
		evs, err := w.rdb.XRange(ctx, w.prefix+"events", "-", "+").Result()
		if err != nil {
			return err
		}
		clear(o.tickets)
		clear(o.created)
		for _, e := range evs {
			if e.Values["type"] == "ticket.created" {
				id, _ := e.Values["message_id"].(string)
				if o.tickets[id]++; o.tickets[id] == 1 {
					o.created[id] = streamTime(e.ID)
				}
			}
		}
		o.nTicket, err = w.rdb.ZCard(ctx, w.prefix+"tickets").Result()
		return err
	})
	for _, srv := range []*fakesmtp.Server{w.fakes.GmailSMTP, w.mx} {
		for _, m := range srv.Received() {
			id := fakesmtp.MessageID(m.Data)
			for _, rc := range m.To {
				d := fakesmtp.Delivery{MessageID: id, Rcpt: strings.ToLower(rc)}
				o.copies[d]++
				if f, ok := o.first[d]; !ok || m.At.Before(f) {
					o.first[d] = m.At
				}
			}
		}
	}
	return o
}

// pending counts the mails not yet a ticket and \Seen, and the accepted
// notifications not yet delivered to every recipient.
func (o outcome) pending() (mails, notifs int) {
	for _, m := range o.mails {
		if o.tickets[m.MessageID] == 0 || !o.seen[m.UID] {
			mails++
		}
	}
	for _, n := range o.notifs {
		for _, rc := range n.Rcpts {
			if o.copies[fakesmtp.Delivery{MessageID: n.MessageID, Rcpt: rc}] == 0 {
				notifs++
				break
			}
		}
	}
	return mails, notifs
}

// drain waits until nothing is pending and the relay's queue is empty (a
// message delivered once may be queued for another try), or drainTimeout
// passes, then a little more for copies that come late, and returns the
// outcome and when it drained (zero if it did not).
func (w *world) drain() (outcome, time.Time) {
	w.t.Helper()
	start := time.Now()
	var drained time.Time
	for {
		o := w.observe()
		m, n := o.pending()
		if m == 0 && n == 0 && w.queueDepth() == 0 {
			drained = time.Now()
			w.t.Logf("drained in %s: %d mails, %d notifications (%s)", drained.Sub(start).Round(10*time.Millisecond), len(o.mails), len(o.notifs), w.led.tries())
			break
		}
		if time.Since(start) > drainTimeout {
			w.t.Logf("not drained after %s: %d mails and %d notifications pending (%s)", drainTimeout, m, n, w.led.tries())
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	return w.observe(), drained
}

// queueDepth is how many messages the relay still holds, as `mailgate
// queue list --json` says; -1 when it cannot say.
func (w *world) queueDepth() int64 {
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	out, _, err := mgproc.Run(ctx, binary, w.config, "queue", "list", "--json", "--limit", "1")
	var l struct {
		Queued int64 `json:"queued"`
	}
	if err != nil || json.Unmarshal([]byte(out), &l) != nil {
		return -1
	}
	return l.Queued
}

// allowance names the copies a recipient may get twice: those the peer
// accepted while mailgate could not learn or record that it had (a kill
// between the peer's 250 and the record, a connection cut after the final
// dot). No retry policy can tell those from a loss; delivering again is
// the at-least-once side of the promise.
type allowance map[fakesmtp.Delivery]string // → why

// check fails the test for every broken promise in o and returns how many
// copies were delivered twice within the allowance the scenario gathered
// so far (w.allow).
func (w *world) check(o outcome) (atLeastOnce int) {
	allow := w.allow
	t := w.t
	t.Helper()
	var lost, dupTickets, seenNoTicket, unseen []string
	for _, m := range o.mails {
		n := o.tickets[m.MessageID]
		switch {
		case n == 0 && o.seen[m.UID]:
			seenNoTicket = append(seenNoTicket, fmt.Sprintf("%s (uid %d)", m.MessageID, m.UID))
		case n == 0:
			lost = append(lost, m.MessageID)
		case n > 1:
			dupTickets = append(dupTickets, fmt.Sprintf("%s ×%d", m.MessageID, n))
		case !o.seen[m.UID]:
			unseen = append(unseen, m.MessageID)
		}
	}
	if len(seenNoTicket) > 0 {
		t.Errorf("%d of %d mails are \\Seen in %s without a ticket (read in Gmail, lost for the helpdesk): %s", len(seenNoTicket), len(o.mails), w.box.Name(), examples(seenNoTicket))
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d mails never became a ticket within %s: %s", len(lost), len(o.mails), drainTimeout, examples(lost))
	}
	if len(dupTickets) > 0 {
		t.Errorf("%d of %d mails became several tickets: %s", len(dupTickets), len(o.mails), examples(dupTickets))
	}
	if len(unseen) > 0 {
		t.Errorf("%d of %d mails are tickets but still unread in %s after %s: %s", len(unseen), len(o.mails), w.box.Name(), drainTimeout, examples(unseen))
	}
	if len(o.mails) > 0 && o.nTicket != int64(len(o.mails)) {
		t.Errorf("the store holds %d tickets for %d mails", o.nTicket, len(o.mails))
	}

	var undelivered, twice, allowed []string
	for _, n := range o.notifs {
		for _, rc := range n.Rcpts {
			d := fakesmtp.Delivery{MessageID: n.MessageID, Rcpt: rc}
			switch c := o.copies[d]; {
			case c == 0:
				undelivered = append(undelivered, fmt.Sprintf("%s to %s (queue id %s)", n.MessageID, rc, n.QueueID))
			case c == 2 && allow[d] != "":
				atLeastOnce++
				allowed = append(allowed, fmt.Sprintf("%s to %s: %s", n.MessageID, rc, allow[d]))
			case c > 1:
				twice = append(twice, fmt.Sprintf("%s to %s ×%d (queue id %s, accepted at the helpdesk's try %d)", n.MessageID, rc, c, n.QueueID, n.Tries))
			}
		}
	}
	if len(undelivered) > 0 {
		t.Errorf("%d copies of the %d notifications accepted with 250 were never delivered within %s: %s", len(undelivered), len(o.notifs), drainTimeout, examples(undelivered))
	}
	if len(twice) > 0 {
		t.Errorf("%d copies were delivered more than once to a recipient: %s", len(twice), examples(twice))
	}
	if len(allowed) > 0 {
		t.Logf("AT-LEAST-ONCE: %d copies delivered twice, each accepted by the peer while mailgate could not learn or record it: %s", len(allowed), examples(allowed))
	}
	w.led.mu.Lock()
	rejected := slices.Clone(w.led.rejected)
	w.led.mu.Unlock()
	if len(rejected) > 0 {
		t.Errorf("the relay refused %d notifications for good (5xx), where a temporary failure was due: %s", len(rejected), examples(rejected))
	}
	return atLeastOnce
}

// examples lists up to 8 of xs.
func examples(xs []string) string {
	slices.Sort(xs)
	if len(xs) > 8 {
		return strings.Join(xs[:8], "; ") + fmt.Sprintf("; and %d more", len(xs)-8)
	}
	return strings.Join(xs, "; ")
}

// firstTicketAfter is how long after at the first ticket was created, by
// the time in its event's stream id (Redis's clock, on this machine).
func (w *world) firstTicketAfter(at time.Time) (time.Duration, bool) {
	w.t.Helper()
	var found time.Duration
	ok := false
	w.read("the ticket events", func(ctx context.Context) error {
		evs, err := w.rdb.XRangeN(ctx, w.prefix+"events", strconv.FormatInt(at.UnixMilli(), 10), "+", 500).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for _, e := range evs {
			if e.Values["type"] != "ticket.created" {
				continue
			}
			found, ok = streamTime(e.ID).Sub(at), true
			return nil
		}
		return nil
	})
	return found, ok
}

// streamTime is when a stream entry was added, from its id.
func streamTime(id string) time.Time {
	ms, _ := strconv.ParseInt(strings.SplitN(id, "-", 2)[0], 10, 64)
	return time.UnixMilli(ms)
}

// backlogCleared is how long after at every mail appended and every
// notification accepted before it was a ticket, or delivered to all its
// recipients; false if some never were.
func (o outcome) backlogCleared(at time.Time) (time.Duration, bool) {
	last := at
	for _, m := range o.mails {
		if m.At.After(at) {
			continue
		}
		c, ok := o.created[m.MessageID]
		if !ok {
			return 0, false
		}
		if c.After(last) {
			last = c
		}
	}
	for _, n := range o.notifs {
		if n.Accepted.After(at) {
			continue
		}
		for _, rc := range n.Rcpts {
			f, ok := o.first[fakesmtp.Delivery{MessageID: n.MessageID, Rcpt: rc}]
			if !ok {
				return 0, false
			}
			if f.After(last) {
				last = f
			}
		}
	}
	return last.Sub(at), true
}

// firstDeliveryAfter is how long after at a notification was first
// delivered; with acceptedAfter set, only notifications the relay accepted
// after it count (the relay takes new mail and sends it).
func (w *world) firstDeliveryAfter(o outcome, at, acceptedAfter time.Time) (time.Duration, bool) {
	var best time.Time
	for _, n := range o.notifs {
		if n.Accepted.Before(acceptedAfter) {
			continue
		}
		for _, rc := range n.Rcpts {
			f, ok := o.first[fakesmtp.Delivery{MessageID: n.MessageID, Rcpt: rc}]
			if ok && !f.Before(at) && (best.IsZero() || f.Before(best)) {
				best = f
			}
		}
	}
	if best.IsZero() {
		return 0, false
	}
	return best.Sub(at), true
}

// endLoad is how a scenario ends: the load l goes on for runOn after the
// fault healed, then stops; once every mail is ticketed and every
// notification delivered, the run is checked (nothing lost, nothing
// doubled) and the time to resume asserted and logged.
func (w *world) endLoad(l *load, runOn time.Duration, what string, healed time.Time, fetch, relay bool, acceptedAfter time.Time) {
	w.t.Helper()
	time.Sleep(runOn)
	l.stop()
	o, _ := w.drain()
	w.check(o)
	w.assertResumed(what, healed, o, fetch, relay, acceptedAfter)
}

// assertResumed logs how long after healed tickets were created again
// (if fetch) and notifications delivered again (if relay), and fails the
// test when either took longer than resumeBound or never happened. It
// also logs when the work that had piled up by then was done.
func (w *world) assertResumed(what string, healed time.Time, o outcome, fetch, relay bool, acceptedAfter time.Time) {
	t := w.t
	t.Helper()
	var figures []string
	if fetch {
		d, ok := w.firstTicketAfter(healed)
		figures = append(figures, "first ticket "+figure(d, ok))
		if !ok || d > resumeBound {
			t.Errorf("%s: no ticket was created within %s of the fault healing (first: %s)", what, resumeBound, figure(d, ok))
		}
	}
	if relay {
		d, ok := w.firstDeliveryAfter(o, healed, acceptedAfter)
		figures = append(figures, "first delivery "+figure(d, ok))
		if !ok || d > resumeBound {
			t.Errorf("%s: no notification was delivered within %s of the fault healing (first: %s)", what, resumeBound, figure(d, ok))
		}
	}
	figures = append(figures, "backlog cleared "+figure(o.backlogCleared(healed)))
	t.Logf("RESUME %s (Redis %s, IMAP %s): %s after the fault healed", what, w.topo, w.box.Name(), strings.Join(figures, ", "))
}

// assertCaughtUp logs how long after healed everything pending was done
// (drained, from drain) and fails the test when that took longer than
// resumeBound or never happened.
func (w *world) assertCaughtUp(what string, healed, drained time.Time) {
	w.t.Helper()
	d, ok := drained.Sub(healed), !drained.IsZero()
	if !ok || d > resumeBound {
		w.t.Errorf("%s: mailgate had not caught up within %s of the fault healing (caught up: %s)", what, resumeBound, figure(d, ok))
	}
	w.t.Logf("RESUME %s (Redis %s, IMAP %s): caught up %s after the fault healed", what, w.topo, w.box.Name(), figure(d, ok))
}

func figure(d time.Duration, ok bool) string {
	if !ok {
		return "never"
	}
	return d.Round(10 * time.Millisecond).String()
}
