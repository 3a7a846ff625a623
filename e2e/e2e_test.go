package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/mgproc"
)

// TestServe runs `mailgate serve` as a separate process through a
// helpdesk's day and a crash:
//
//  1. a customer's mail becomes a ticket.created event; the helpdesk
//     answers through the relay, the answer leaves via Gmail SMTP as the
//     account, and the customer's reply to it is a ticket.comment on the
//     same ticket;
//  2. SIGTERM: serve exits 0 within shutdown_grace and releases the
//     account's lease, so the next serve polls at once;
//  3. kill -9 during a burst of 500 incoming mails and 100 notifications,
//     then a restart: every mail is a ticket exactly once and \Seen, and
//     every notification the relay answered 250 for is delivered.
func TestServe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const grace = 10 * time.Second
	w := newWorld(t, ctx, Config{
		PollInterval:  2 * time.Second,
		LeaseTTL:      30 * time.Second, // the default: a release must not wait for it
		ShutdownGrace: grace,
	})
	w.addAccount(account)
	hd := newHelpdesk(w)

	// Reading the Sent folder too: the notifications the relay sends
	// through Gmail land there and must be skipped.
	serve1 := w.serve("--set", "fetch.sent_folder=true")
	w.waitPolled(account, serve1.Started, 10*time.Second)

	// phase runs f as a subtest, with the world reporting to it meanwhile.
	phase := func(name string, f func(t *testing.T)) bool {
		defer func() { w.t = t }()
		return t.Run(name, func(t *testing.T) {
			w.t = t
			f(t)
		})
	}

	var ticket int64
	if !phase("mail in, answer out, reply threads", func(t *testing.T) {
		start := time.Now()
		const customer = "elodie@customer.example"
		if _, err := w.fakes.IMAP.Deliver(account, customerMail("Élodie Martin <"+customer+">", "Invoice 42 is wrong", "cust-1@customer.example"), false); err != nil {
			t.Fatal(err)
		}
		created := hd.next(10*time.Second, "ticket.created", func(e event) bool {
			return e.Type == "ticket.created" && e.MessageID == "cust-1@customer.example"
		})
		ticket = created.Ticket
		var tk struct {
			ID             int64  `json:"id"`
			SupportAddress string `json:"support_address"`
			Subject        string `json:"subject"`
			Requester      struct{ Email string }
			Comments       []struct{ Text string }
		}
		if err := json.Unmarshal([]byte(created.Data), &tk); err != nil {
			t.Fatalf("ticket.created data: %v: %s", err, created.Data)
		}
		if tk.ID != ticket || tk.SupportAddress != account || tk.Requester.Email != customer || tk.Subject != "Invoice 42 is wrong" || len(tk.Comments) != 1 || created.Comment != 1 {
			t.Errorf("ticket.created = ticket %d comment %d %+v, want ticket %d from %s to %s with its first comment", created.Ticket, created.Comment, tk, ticket, customer, account)
		}
		t.Logf("mail delivered → ticket.created #%d on the stream: %s", ticket, time.Since(start).Round(time.Millisecond))

		// The helpdesk answers through the relay.
		const notifID = "notif-1@helpdesk.e2e.test"
		qid, _, err := submit(w.relay, account, customer, notification(customer, "Re: Invoice 42 is wrong", notifID, ticket, false, "cust-1@customer.example"))
		if err != nil {
			t.Fatalf("relay: %v", err)
		}
		got := w.fakes.GmailSMTP.WaitFor(1, 10*time.Second)
		if len(got) != 1 {
			t.Fatalf("Gmail SMTP received %d messages, want the notification %s", len(got), qid)
		}
		m := got[0]
		if m.AuthUser != account || !m.TLS || m.FromRewritten || len(m.To) != 1 || m.To[0] != customer || messageID(m.Data) != notifID {
			t.Errorf("Gmail SMTP got auth %q tls %v rewritten %v to %v message-id %q; want as %s over TLS to %s, %s",
				m.AuthUser, m.TLS, m.FromRewritten, m.To, messageID(m.Data), account, customer, notifID)
		}
		if h := header(m.Data, "X-Mailgate-Ticket"); h != "" {
			t.Errorf("X-Mailgate-Ticket %q reached Gmail; the relay must remove it", h)
		}
		t.Logf("relay queued %s → sent via Gmail SMTP: %s", qid, time.Since(start).Round(time.Millisecond))

		// The customer answers the notification.
		if _, err := w.fakes.IMAP.Deliver(account, customerMail(customer, "Re: Invoice 42 is wrong", "cust-2@customer.example", "cust-1@customer.example", notifID), false); err != nil {
			t.Fatal(err)
		}
		comment := hd.next(10*time.Second, "ticket.comment", func(e event) bool {
			return e.MessageID == "cust-2@customer.example"
		})
		var c struct {
			ThreadedBy string `json:"threaded_by"`
			Index      int64  `json:"index"`
		}
		_ = json.Unmarshal([]byte(comment.Data), &c)
		if comment.Type != "ticket.comment" || comment.Ticket != ticket || comment.Comment != 2 || c.ThreadedBy != "in-reply-to" {
			t.Errorf("the reply became %s on ticket %d (comment %d, threaded_by %q); want ticket.comment 2 on #%d threaded by in-reply-to",
				comment.Type, comment.Ticket, comment.Comment, c.ThreadedBy, ticket)
		}
		var shown struct {
			CommentCount int `json:"comment_count"`
		}
		if err := json.Unmarshal([]byte(w.mailgate("tickets", "show", fmt.Sprint(ticket), "--json")), &shown); err != nil || shown.CommentCount != 2 {
			t.Errorf("tickets show %d --json: comment_count %d (%v), want 2", ticket, shown.CommentCount, err)
		}
		t.Logf("whole round trip: %s", time.Since(start).Round(time.Millisecond))
	}) {
		return
	}

	if !phase("an answer written in Gmail becomes the agent's comment", func(t *testing.T) {
		// The helpdesk answers without naming the ticket: only the relay's
		// registration of every Message-ID tells its copy in Sent apart.
		const helpdeskID, agentID = "plain-1@helpdesk.e2e.test", "gmail-web-1@mail.gmail.com"
		before := len(w.fakes.GmailSMTP.Received())
		if _, _, err := submit(w.relay, account, "elodie@customer.example",
			notification("elodie@customer.example", "Re: Invoice 42 is wrong", helpdeskID, 0, false, "cust-2@customer.example")); err != nil {
			t.Fatalf("relay: %v", err)
		}
		if got := w.fakes.GmailSMTP.WaitFor(before+1, 10*time.Second); len(got) != before+1 {
			t.Fatalf("Gmail SMTP received %d messages, want %d", len(got), before+1)
		}
		agent := []byte("From: Acme Support <" + account + ">\r\nTo: elodie@customer.example\r\nSubject: Re: Invoice 42 is wrong\r\n" +
			"Message-ID: <" + agentID + ">\r\nIn-Reply-To: <cust-2@customer.example>\r\nReferences: <cust-1@customer.example> <cust-2@customer.example>\r\n" +
			"Date: " + time.Now().Format(time.RFC1123Z) + "\r\n\r\nFixed it from Gmail.\r\n")
		if _, err := w.fakes.IMAP.AppendSent(account, agent); err != nil {
			t.Fatal(err)
		}
		ev := hd.next(15*time.Second, "the agent's comment", func(e event) bool {
			if e.MessageID == helpdeskID {
				t.Errorf("the helpdesk's own answer came back from the Sent folder as %s", e.Type)
			}
			return e.MessageID == agentID
		})
		var c struct {
			Role string `json:"role"`
		}
		_ = json.Unmarshal([]byte(ev.Data), &c)
		if ev.Type != "ticket.comment" || ev.Ticket != ticket || ev.Author != "agent" || !ev.SuppressTriggers || c.Role != "agent" {
			t.Errorf("agent's answer = %+v (role %q), want a ticket.comment on #%d by the agent that triggers nothing", ev, c.Role, ticket)
		}
	}) {
		return
	}

	if !phase("SIGTERM stops cleanly and releases the lease", func(t *testing.T) {
		start := time.Now()
		if err := serve1.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		code, err := serve1.Wait(grace + 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		t.Logf("SIGTERM → exit %d in %s", code, took.Round(time.Millisecond))
		if code != 0 || took > grace {
			t.Errorf("serve exited %d after %s; want 0 within shutdown_grace %s", code, took, grace)
		}
		if log := serve1.Log(); !strings.Contains(log, "mailgate stopped") {
			t.Errorf("serve's log does not say it stopped:\n%s", tail(log, 20))
		}
		if n, err := w.rdb.Exists(ctx, prefix+"lease:"+account).Result(); err != nil || n != 0 {
			t.Errorf("the lease of %s is still held after a clean stop (exists=%d, %v): the next serve would wait fetch.lease_ttl", account, n, err)
		}
	}) {
		return
	}

	// The next serve holds leases for 3s only, so that after its kill -9
	// the one after it takes over quickly.
	serve2 := w.serve("--set", "fetch.lease_ttl=3s")
	if !phase("the next serve polls at once", func(t *testing.T) {
		at := w.waitPolled(account, serve2.Started, 10*time.Second)
		t.Logf("first poll %s after start (the released lease had 30s left)", at.Sub(serve2.Started).Round(time.Millisecond))
		if strings.Contains(serve2.Log(), "standing by") {
			t.Errorf("serve 2 waited for a lease that should have been released")
		}
	}) {
		return
	}

	phase("kill -9 during a burst", func(t *testing.T) {
		crashBurst(t, w, serve2, ticket)
	})
}

// crashBurst kills serve2 (kill -9) while 500 mails arrive and the
// helpdesk submits 100 notifications on ticket, one of them hanging at
// the smarthost, then restarts serve and checks that nothing was lost or
// duplicated: mail exactly once, accepted notifications at least once.
func crashBurst(t *testing.T, w *world, serve2 *mgproc.Process, ticket int64) {
	const mails, notifs = 500, 100
	ctx, stop := context.WithCancel(w.ctx)
	start := time.Now()
	var wg sync.WaitGroup
	// The helpdesk goroutines stop before the test ends, however it ends.
	defer func() {
		stop()
		wg.Wait()
	}()

	// Incoming: 500 mails from 500 customers (one sender would hit
	// fetch.sender_rate_limit), at a pace the kill can fall into.
	uids := make([]imap.UID, mails)
	delivered := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(delivered)
		for i := range mails {
			raw := customerMail(fmt.Sprintf("customer-%d@customer.example", i), fmt.Sprintf("burst %d", i), fmt.Sprintf("burst-%d@customer.example", i))
			if ctx.Err() != nil {
				return
			}
			uid, err := w.fakes.IMAP.Deliver(account, raw, false)
			if err != nil {
				t.Errorf("Deliver %d: %v", i, err)
				return
			}
			uids[i] = uid
			if i%10 == 9 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()

	// The first message the relay delivers itself hangs at the smarthost,
	// so that the kill always finds a delivery in flight.
	w.mx.StallNext(1)

	// Outgoing: 100 notifications from 4 helpdesk workers, each retrying
	// until it gets a 250, as a helpdesk does while the relay is down.
	// Every fourth has an attachment, so it goes direct (smarthost) rather
	// than via Gmail.
	var (
		mu       sync.Mutex
		accepted = map[string]string{} // queue id → Message-ID
		refused  atomic.Int32          // tries refused: connection refused, or an SMTP error reply
		unknown  atomic.Int32          // tries cut off by the kill: stored or not, unknowable
	)
	var submitters sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		submitters.Add(1)
		go func() {
			defer wg.Done()
			defer submitters.Done()
			for i := g; i < notifs; i += 4 {
				to := fmt.Sprintf("customer-%d@customer.example", i)
				id := fmt.Sprintf("burst-notif-%d@helpdesk.e2e.test", i)
				data := notification(to, fmt.Sprintf("Re: burst %d", i), id, ticket, i%4 == 3, "")
				for ctx.Err() == nil {
					qid, replied, err := submit(w.relay, account, to, data)
					if err == nil {
						mu.Lock()
						accepted[qid] = id
						mu.Unlock()
						break
					}
					if replied {
						refused.Add(1)
					} else if !strings.Contains(err.Error(), "connection refused") {
						unknown.Add(1)
					} else {
						refused.Add(1)
					}
					time.Sleep(50 * time.Millisecond)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}

	// Kill serve in the middle of both.
	burstTickets := func() int {
		n := 0
		for _, e := range w.allEvents() {
			if e.Type == "ticket.created" && strings.HasPrefix(e.MessageID, "burst-") {
				n++
			}
		}
		return n
	}
	w.eventually(20*time.Second, "the burst to be under way", func() bool {
		mu.Lock()
		n := len(accepted)
		mu.Unlock()
		return n >= 20 && burstTickets() >= 100 && w.mx.Held() == 1
	})
	serve2.Kill()
	w.mx.Release()
	killedAt := time.Now()
	mu.Lock()
	atKill := len(accepted)
	mu.Unlock()
	t.Logf("kill -9 at %s: %d/%d mails were tickets, %d/%d notifications accepted, %d delivered",
		killedAt.Sub(start).Round(time.Millisecond), burstTickets(), mails, atKill, notifs,
		len(w.fakes.GmailSMTP.Received())-1+len(w.fakes.MX.Received()))

	serve3 := w.serve()
	t.Logf("serve restarted %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	<-delivered
	submitters.Wait()

	// Wait until quiet: every mail \Seen and every accepted message out.
	deliveredIDs := func() map[string]int {
		n := map[string]int{}
		for _, m := range append(w.fakes.GmailSMTP.Received(), w.fakes.MX.Received()...) {
			n[messageID(m.Data)]++
		}
		return n
	}
	missing := func() (mails, msgs int) {
		for _, uid := range uids {
			if !w.fakes.IMAP.IsSeen(account, uid) {
				mails++
			}
		}
		got := deliveredIDs()
		for _, id := range accepted {
			if got[id] == 0 {
				msgs++
			}
		}
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	var mailsDone, msgsDone, polled time.Duration
	for {
		if a, err := w.acc.Get(ctx, account); err == nil && polled == 0 && a.LastPoll.After(serve3.Started) {
			polled = a.LastPoll.Sub(killedAt)
		}
		m, n := missing()
		if m == 0 && mailsDone == 0 {
			mailsDone = time.Since(killedAt)
		}
		if n == 0 && msgsDone == 0 {
			msgsDone = time.Since(killedAt)
		}
		if m == 0 && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("30s after the restart %d mails are still unread in Gmail and %d accepted notifications undelivered", m, n)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	done := func(d time.Duration) string {
		if d == 0 {
			return "never"
		}
		return d.Round(time.Millisecond).String()
	}
	t.Logf("after the kill: serve 3 polled after %s (once the dead lease expired, at its next try: jitter(lease_ttl/3)); every mail \\Seen after %s; every notification delivered after %s",
		done(polled), done(mailsDone), done(msgsDone))
	time.Sleep(time.Second) // anything late would show up as a duplicate now

	// Every mail a ticket, exactly once.
	created := map[string]int{}
	for _, e := range w.allEvents() {
		if e.Type == "ticket.created" {
			created[e.MessageID]++
		}
	}
	var dup, lost []string
	for i := range mails {
		id := fmt.Sprintf("burst-%d@customer.example", i)
		switch created[id] {
		case 1:
		case 0:
			lost = append(lost, id)
		default:
			dup = append(dup, fmt.Sprintf("%s×%d", id, created[id]))
		}
	}
	if len(dup) > 0 || len(lost) > 0 {
		t.Errorf("ticket.created events: %d mails without one %.10q, %d with several %.10q", len(lost), lost, len(dup), dup)
	}
	if n, err := w.rdb.ZCard(ctx, prefix+"tickets").Result(); err != nil || n != mails+1 {
		t.Errorf("%d tickets in Redis (%v), want %d: the first one and one per burst mail", n, err, mails+1)
	}
	var listed []struct {
		Subject string `json:"subject"`
	}
	if err := json.Unmarshal([]byte(w.mailgate("tickets", "list", "--json", "--limit", "1000")), &listed); err != nil {
		t.Fatalf("tickets list --json: %v", err)
	}
	subjects := map[string]int{}
	for _, tk := range listed {
		subjects[tk.Subject]++
	}
	for i := range mails {
		if s := fmt.Sprintf("burst %d", i); subjects[s] != 1 {
			t.Errorf("tickets list: %d tickets with subject %q, want 1", subjects[s], s)
		}
	}
	unseen := 0
	for _, uid := range uids {
		if !w.fakes.IMAP.IsSeen(account, uid) {
			unseen++
		}
	}
	if unseen > 0 {
		t.Errorf("%d of the %d mails are not \\Seen in Gmail", unseen, mails)
	}

	// Every accepted notification delivered; duplicates are allowed
	// (at-least-once) and counted.
	got := deliveredIDs()
	var undelivered []string
	dups := 0
	for qid, id := range accepted {
		switch n := got[id]; {
		case n == 0:
			undelivered = append(undelivered, qid)
		case n > 1:
			dups += n - 1
		}
	}
	gmail, mx := 0, 0
	for _, m := range w.fakes.GmailSMTP.Received() {
		if strings.HasPrefix(messageID(m.Data), "burst-notif-") {
			gmail++
			if m.AuthUser != account {
				t.Errorf("%s went via Gmail authenticated as %q", messageID(m.Data), m.AuthUser)
			}
		}
	}
	for _, m := range w.fakes.MX.Received() {
		if strings.HasPrefix(messageID(m.Data), "burst-notif-") {
			mx++
			if !strings.Contains(header(m.Data, "DKIM-Signature"), "d="+DKIMDomain) {
				t.Errorf("%s went direct without a DKIM signature for %s", messageID(m.Data), DKIMDomain)
			}
		}
	}
	t.Logf("notifications: %d accepted with 250 (%d tries refused while serve was down, %d cut off by the kill); delivered %d via Gmail + %d direct; %d duplicate deliveries",
		len(accepted), refused.Load(), unknown.Load(), gmail, mx, dups)
	w.explainUndelivered(undelivered, accepted)

	// serve 3 still stops cleanly after all this.
	if err := serve3.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := serve3.Wait(15 * time.Second); err != nil || code != 0 {
		t.Errorf("serve 3 after SIGTERM: exit %d, %v", code, err)
	}
}

// explainUndelivered fails the test for each accepted message that was
// never delivered, with its queue record and who holds it in the
// delivery consumer group.
func (w *world) explainUndelivered(qids []string, msgIDs map[string]string) {
	w.t.Helper()
	if len(qids) == 0 {
		return
	}
	pending, _ := w.rdb.XPendingExt(w.ctx, &redis.XPendingExtArgs{Stream: prefix + "relay:ready", Group: "delivery", Start: "-", End: "+", Count: 100}).Result()
	for _, p := range pending {
		w.t.Logf("delivery group: stream entry %s held by consumer %s for %s (delivered to it %d times)", p.ID, p.Consumer, p.Idle.Round(time.Millisecond), p.RetryCount)
	}
	for _, qid := range qids {
		var m struct {
			State    string `json:"state"`
			Attempts int    `json:"attempts"`
		}
		out, _, err := mgproc.Run(w.ctx, binary, w.config, "queue", "show", qid, "--json")
		_ = json.Unmarshal([]byte(out), &m)
		w.t.Errorf("accepted message %s (%s) was not delivered: queue state %q, %d attempts (%v); "+
			"a delivery in flight when serve died stays pending for its dead consumer until the delivery group's claim idle time (10m) passes",
			qid, msgIDs[qid], m.State, m.Attempts, err)
	}
}

// TestShutdownGraceBoundsDelivery: SIGTERM while a delivery hangs at the
// smarthost. shutdown_grace is "how long in-flight fetches and deliveries
// may take to finish before mailgate exits anyway; unfinished work is
// retried on next start" (mailgate.example.yaml).
func TestShutdownGraceBoundsDelivery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const grace = 3 * time.Second
	w := newWorld(t, ctx, Config{PollInterval: 2 * time.Second, LeaseTTL: 30 * time.Second, ShutdownGrace: grace})
	w.addAccount(account)
	serve1 := w.serve()
	w.waitPolled(account, serve1.Started, 10*time.Second)

	w.mx.StallNext(1)
	const msgID = "stalled-1@helpdesk.e2e.test"
	qid, _, err := submit(w.relay, account, "bob@customer.example", notification("bob@customer.example", "Your invoice", msgID, 0, true, ""))
	if err != nil {
		t.Fatal(err)
	}
	w.eventually(10*time.Second, "the delivery to hang at the smarthost", func() bool { return w.mx.Held() == 1 })

	start := time.Now()
	if err := serve1.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := serve1.Wait(grace + 5*time.Second)
	took := time.Since(start)
	switch {
	case err != nil:
		t.Errorf("SIGTERM with a delivery in flight: %v; want an exit within shutdown_grace %s", err, grace)
		serve1.Kill()
	case code != 0 || took > grace+time.Second:
		t.Errorf("SIGTERM with a delivery in flight: exit %d after %s; want 0 within shutdown_grace %s", code, took.Round(time.Millisecond), grace)
	default:
		t.Logf("SIGTERM with a delivery in flight: exit 0 after %s", took.Round(time.Millisecond))
	}
	w.mx.Release()

	serve2 := w.serve()
	if got := w.fakes.MX.WaitFor(1, 10*time.Second); len(got) == 1 && messageID(got[0].Data) == msgID {
		t.Logf("retried and delivered %s after the restart", time.Since(serve2.Started).Round(time.Millisecond))
		return
	}
	w.explainUndelivered([]string{qid}, map[string]string{qid: msgID})
}
