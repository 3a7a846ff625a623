//go:build demo

package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/internal/fakeworld"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/tickets"
)

// scene is the demo's story, played against the daemon.
type scene struct {
	d     *daemon
	w     *fakeworld.World
	n     *narrator
	q     *smtprelay.Queue
	quota *smtprelay.Quota
	relay string // the relay's SMTP address
	sent  []sentNote
}

type sentNote struct {
	what, id, route string
}

func newScene(ctx context.Context, cfg *config.Config, w *fakeworld.World, n *narrator, log *slog.Logger) (*scene, error) {
	d, err := newDaemon(ctx, cfg, log, daemonOptions{resolver: fakeworld.LoopbackMX{}, mxPort: w.MXPort})
	if err != nil {
		return nil, err
	}
	sc := &scene{d: d, w: w, n: n, q: d.queue, quota: smtprelay.NewQuota(d.queue), relay: d.relayL.Addr().String()}

	// Mail already in the mailboxes before they are connected: the admin
	// chose to import the last 50 (here: all of them), read or not.
	for _, u := range []string{demoGmail, demoWorkspace} {
		w.IMAP.AddUser(u)
	}
	old := []struct {
		to, from, subject string
		seen              bool
	}{
		{demoGmail, "marc@customer.example", "Invoice 2026-113 is wrong", true},
		{demoGmail, "ines@customer.example", "How do I reset my password?", false},
		{demoGmail, "news@vendor.example", "Our November newsletter", true},
		{demoWorkspace, "olga@partner.example", "Partnership renewal", false},
		{demoWorkspace, "tom@customer.example", "Delivery address change", true},
	}
	for i, m := range old {
		raw := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <old-%d@customer.example>\r\n\r\nAn older mail.\r\n",
			m.from, m.to, m.subject, time.Now().Add(-time.Duration(48-i)*time.Hour).Format(time.RFC1123Z), i)
		w.IMAP.Deliver(m.to, []byte(raw), m.seen)
	}
	// "Existing mail" is what arrived before the connection, by IMAP
	// INTERNALDATE (whole seconds): connect in the next second.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	for _, a := range []accounts.Account{
		// A consumer Gmail address cannot be DKIM-signed by anyone but
		// Google: beyond its quota its mail goes out From the helpdesk's
		// own signed domain, with the Gmail address as Reply-To.
		{Email: demoGmail, Kind: accounts.KindGmail, ImportRecent: 50, Fallback: accounts.FallbackRewriteFrom},
		{Email: demoWorkspace, Kind: accounts.KindWorkspace, ImportRecent: 50},
	} {
		if _, err := d.acc.Connect(ctx, a, w.OAuth.IssueRefreshToken(a.Email)); err != nil {
			d.close()
			return nil, err
		}
	}
	n.step("connected %s (gmail, demo quota %d a day) and %s (workspace, DKIM key for %s), importing their recent mail", demoGmail, cfg.Relay.GmailDailyLimit, demoWorkspace, demoDomain)
	return sc, nil
}

func (sc *scene) play(ctx context.Context) error {
	st, n := sc.d.tickets, sc.n

	// 1. Initial import, with helpdesk triggers suppressed.
	if err := waitFor(ctx, "the initial import", func() (bool, error) {
		ts, err := st.List(ctx, tickets.ListOptions{Limit: 100})
		suppressed := 0
		for _, t := range ts {
			if t.SuppressTriggers {
				suppressed++
			}
		}
		return suppressed == 5, err
	}); err != nil {
		return err
	}
	n.step("imported 5 recent mails (read and unread) as tickets with triggers suppressed: the helpdesk sends no auto-reply for old mail")

	// 2. Customers write in; IDLE brings each mail at once.
	latin1 := "From: =?ISO-8859-1?Q?=C9lodie_Martin?= <elodie@customer.example>\r\nTo: " + demoWorkspace + "\r\n" +
		"Subject: =?ISO-8859-1?Q?Probl=E8me_de_facturation?=\r\nMessage-ID: <elodie-1@customer.example>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Bonjour, ma facture de novembre est factur=E9e deux fois. Merci de v=E9rifier.\r\n"
	elodie, took, err := sc.deliverAndWait(ctx, demoWorkspace, latin1, "Problème de facturation")
	if err != nil {
		return err
	}
	n.step("Élodie writes in French (ISO-8859-1, quoted-printable) → ticket #%d %q in %s (IMAP IDLE, not the 1-minute poll)", elodie.ID, elodie.Subject, took)

	withAttachment := "From: Paul Durand <paul@customer.example>\r\nTo: " + demoGmail + "\r\nSubject: Screenshot of the error\r\n" +
		"Message-ID: <paul-1@customer.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nThe app crashes, screenshot attached.\r\n--b\r\nContent-Type: image/png\r\n" +
		"Content-Disposition: attachment; filename=\"crash.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b--\r\n"
	paul, took, err := sc.deliverAndWait(ctx, demoGmail, withAttachment, "Screenshot of the error")
	if err != nil {
		return err
	}
	full, _ := st.Get(ctx, paul.ID)
	n.step("Paul writes with a screenshot → ticket #%d, attachment %s (%d bytes, stored once by SHA-256), in %s", paul.ID,
		full.Comments[0].Attachments[0].Filename, full.Comments[0].Attachments[0].Size, took)

	// 3. The helpdesk answers through the relay: via Gmail.
	notif := "<notif-paul-1@helpdesk.acme.example>"
	id, err := sc.send(demoGmail, "paul@customer.example", fmt.Sprintf("[#%d] Re: Screenshot of the error", paul.ID), notif, "", "Thanks Paul, we are looking into it.")
	if err != nil {
		return err
	}
	m, err := sc.finished(ctx, id)
	if err != nil {
		return err
	}
	sc.note("reply to Paul", m)
	n.step("the helpdesk answers Paul through the relay → %s: sent as %s over Gmail SMTP with XOAUTH2, so it is in that account's Sent folder", m.Route, demoGmail)

	// 4. The customer's reply threads onto the ticket.
	reply := "From: Paul Durand <paul@customer.example>\r\nTo: " + demoGmail + "\r\nSubject: Re: [#" + fmt.Sprint(paul.ID) + "] Re: Screenshot of the error\r\n" +
		"Message-ID: <paul-2@customer.example>\r\nIn-Reply-To: " + notif + "\r\nReferences: <paul-1@customer.example> " + notif + "\r\n\r\nIt happens on Android 15.\r\n"
	sc.w.IMAP.Deliver(demoGmail, []byte(reply), false)
	if err := waitFor(ctx, "Paul's reply", func() (bool, error) {
		t, err := st.Get(ctx, paul.ID)
		return err == nil && len(t.Comments) == 2, err
	}); err != nil {
		return err
	}
	t, _ := st.Get(ctx, paul.ID)
	n.step("Paul replies to the notification → comment 2 on ticket #%d (threaded by %s), no new ticket", paul.ID, t.Comments[1].ThreadedBy)

	// 5. A real attachment does not go via Gmail: DKIM-signed direct.
	id, err = sc.send(demoWorkspace, "elodie@customer.example", fmt.Sprintf("[#%d] Re: Problème de facturation", elodie.ID), "", "invoice-corrected.pdf", "Voici la facture corrigée.")
	if err != nil {
		return err
	}
	if m, err = sc.finished(ctx, id); err != nil {
		return err
	}
	sc.note("reply to Élodie + PDF", m)
	verdict := sc.verifyDKIM(m.MessageID)
	n.step("the answer to Élodie carries a PDF → not via Gmail but %s to her MX, DKIM-signed for %s: %s", m.Route, demoDomain, verdict)

	// 6. The quota: 3 a day for this demo Gmail account.
	for i := 2; i <= 4; i++ {
		id, err := sc.send(demoGmail, fmt.Sprintf("customer%d@customer.example", i), fmt.Sprintf("[#%d] Update %d", paul.ID, i), "", "", "An update on your request.")
		if err != nil {
			return err
		}
		m, err := sc.finished(ctx, id)
		if err != nil {
			return err
		}
		sc.note(fmt.Sprintf("notification %d of the day", i), m)
		used, _, _ := sc.quota.Used(ctx, demoGmail)
		switch {
		case m.Route == smtprelay.RouteGmail && sc.eventCount(ctx, tickets.EventQuotaWarning) > 0 && i == 2:
			n.step("notification %d via Gmail (%d/3 today) → quota.warning event: the limit is near", i, used)
		case m.Route == smtprelay.RouteGmail:
			n.step("notification %d via Gmail (%d/3 today)", i, used)
		default:
			n.step("notification %d: quota exhausted → %s, From rewritten to %s (signed), Reply-To %s", i, m.Route, demoRewrite, demoGmail)
		}
	}

	// 7. An out-of-office reply: no ticket, no comment, no loop.
	ooo := "From: Paul Durand <paul@customer.example>\r\nTo: " + demoGmail + "\r\nSubject: Automatic reply: Update 4\r\n" +
		"Auto-Submitted: auto-replied\r\nMessage-ID: <paul-ooo@customer.example>\r\nIn-Reply-To: " + notif + "\r\n\r\nI am away until Monday.\r\n"
	sc.w.IMAP.Deliver(demoGmail, []byte(ooo), false)
	if err := waitFor(ctx, "the auto-reply to be suppressed", func() (bool, error) {
		return sc.eventCount(ctx, tickets.EventMailSuppressed) > 0, nil
	}); err != nil {
		return err
	}
	t, _ = st.Get(ctx, paul.ID)
	n.step("Paul's out-of-office reply → suppressed as auto-reply (mail.suppressed event); ticket #%d still has %d comments: no loop", paul.ID, len(t.Comments))
	return nil
}

// deliverAndWait puts raw in the mailbox and waits for the ticket.
func (sc *scene) deliverAndWait(ctx context.Context, to, raw, subject string) (*tickets.Ticket, time.Duration, error) {
	start := time.Now()
	sc.w.IMAP.Deliver(to, []byte(raw), false)
	var found *tickets.Ticket
	err := waitFor(ctx, "the ticket "+subject, func() (bool, error) {
		ts, err := sc.d.tickets.List(ctx, tickets.ListOptions{Limit: 20})
		for _, t := range ts {
			if t.Subject == subject {
				found = t
			}
		}
		return found != nil, err
	})
	return found, time.Since(start).Round(time.Millisecond), err
}

// send submits a notification to the relay as the helpdesk does.
func (sc *scene) send(from, to, subject, msgID, attachment, body string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Acme Helpdesk <%s>\r\nTo: %s\r\nSubject: %s\r\nMIME-Version: 1.0\r\n", from, to, subject)
	if msgID != "" {
		fmt.Fprintf(&b, "Message-ID: %s\r\n", msgID)
	}
	if attachment == "" {
		fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", body)
	} else {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=mg\r\n\r\n--mg\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n"+
			"--mg\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=%q\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n--mg--\r\n", body, attachment)
	}
	c, err := smtp.Dial(sc.relay)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "", err
	}
	wc, err := c.Data()
	if err != nil {
		return "", err
	}
	wc.Write([]byte(b.String()))
	resp, err := wc.CloseWithResponse()
	if err != nil {
		return "", err
	}
	_, id, _ := strings.Cut(resp.StatusText, "queued as ")
	return strings.TrimSpace(id), nil
}

// finished waits for a queued message to be sent or bounced.
func (sc *scene) finished(ctx context.Context, id string) (*smtprelay.Message, error) {
	var m *smtprelay.Message
	err := waitFor(ctx, "delivery of "+id, func() (bool, error) {
		var err error
		m, err = sc.q.Get(ctx, id, false)
		return err == nil && (m.State == smtprelay.StateSent || m.State == smtprelay.StateBounced), err
	})
	return m, err
}

func (sc *scene) note(what string, m *smtprelay.Message) {
	sc.sent = append(sc.sent, sentNote{what: what, id: m.ID, route: m.Route.String()})
}

// verifyDKIM checks the copy the recipient's MX received, as a receiver
// would, against the demo's DKIM key.
func (sc *scene) verifyDKIM(messageID string) string {
	for _, m := range sc.w.MX.Received() {
		if !bytes.Contains(m.Data, []byte(messageID)) {
			continue
		}
		lookup := func(string) ([]string, error) { return []string{sc.w.DKIM.RecordValue()}, nil }
		vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(m.Data), &msgdkim.VerifyOptions{LookupTXT: lookup})
		if err != nil || len(vs) == 0 {
			return fmt.Sprintf("no signature (%v)", err)
		}
		if vs[0].Err != nil {
			return "signature FAILS: " + vs[0].Err.Error()
		}
		return "the signature verifies (d=" + vs[0].Domain + ")"
	}
	return "not received"
}

func (sc *scene) eventCount(ctx context.Context, typ tickets.EventType) int {
	evs, _ := sc.d.rdb.XRange(ctx, sc.d.tickets.Key("events"), "-", "+").Result()
	n := 0
	for _, e := range evs {
		if e.Values["type"] == string(typ) {
			n++
		}
	}
	return n
}

func (sc *scene) summary() {
	ctx := context.Background()
	n := sc.n
	n.title("summary")
	ts, _ := sc.d.tickets.List(ctx, tickets.ListOptions{Limit: 50})
	var rows [][]string
	for i := len(ts) - 1; i >= 0; i-- {
		t := ts[i]
		rows = append(rows, []string{fmt.Sprintf("#%d", t.ID), t.SupportAddress, t.Requester.Email, clip(t.Subject, 34), fmt.Sprint(t.CommentCount), tagList(t)})
	}
	n.say("tickets:")
	printTable(n.w, "TICKET|MAILBOX|REQUESTER|SUBJECT|COMMENTS|FLAGS", rows)
	rows = nil
	for _, s := range sc.sent {
		rows = append(rows, []string{s.id, s.what, s.route})
	}
	n.say("")
	n.say("notifications:")
	printTable(n.w, "QUEUE ID|WHAT|ROUTE", rows)
	n.say("")
	n.say("Gmail quota (rolling 24 h):")
	limits := relayLimits(sc.d.cfg)
	rows = nil
	for _, email := range []string{demoGmail, demoWorkspace} {
		a, err := sc.d.acc.Get(ctx, email)
		if err != nil {
			continue
		}
		rows = append(rows, []string{email, string(a.Kind), quotaColumn(ctx, sc.quota, a, limits)})
	}
	printTable(n.w, "ACCOUNT|KIND|QUOTA", rows)
	fmt.Fprintln(n.w)
}

func (sc *scene) printAddresses(cfg *config.Config) {
	n := sc.n
	n.title("still running (Ctrl-C to stop)")
	n.say("relay (SMTP, no AUTH from loopback): %s", sc.relay)
	n.say("  swaks --server %s --from %s --to someone@example.org --header 'Subject: [#1] hello'", sc.relay, demoWorkspace)
	n.say("web console (open in a browser): http://%s/ ; also /status, /metrics, /healthz, /readyz", sc.d.httpL.Addr())
	n.say("fake Gmail IMAP: %s (XOAUTH2 only)", sc.w.IMAPAddr)
	n.say("Redis: %s, keys under %q", cfg.Redis.URL, cfg.Redis.Prefix)
	n.say("  redis-cli -u %s XRANGE %sevents - +", cfg.Redis.URL, cfg.Redis.Prefix)
	n.say("  go run ./cmd/mailgate --redis-url %s --set redis.prefix=%s tickets list", cfg.Redis.URL, cfg.Redis.Prefix)
}
