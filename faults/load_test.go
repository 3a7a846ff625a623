package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-smtp"
)

// ledger is what the customers and the helpdesk did, to hold mailgate's
// results against.
type ledger struct {
	mu     sync.Mutex
	mails  []mail            // appended to the mailbox, in order
	notifs map[string]*notif // accepted by the relay, by Message-ID
	n      int               // numbers mails and notifications

	refused  int      // tries answered 4xx: the helpdesk tries again
	unknown  int      // tries cut off without an answer: stored or not, unknowable
	rejected []string // tries answered 5xx: never expected here
}

// mail is one customer mail appended to the mailbox.
type mail struct {
	UID       imap.UID
	MessageID string
	At        time.Time
}

// notif is one notification the relay accepted with a 250.
type notif struct {
	MessageID string
	Rcpts     []string
	QueueID   string
	Accepted  time.Time
	Tries     int
}

func newLedger() *ledger { return &ledger{notifs: map[string]*notif{}} }

func (l *ledger) next() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	return l.n
}

// snapshot returns copies of what was done so far.
func (l *ledger) snapshot() ([]mail, map[string]*notif) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ms := append([]mail(nil), l.mails...)
	ns := make(map[string]*notif, len(l.notifs))
	for k, v := range l.notifs {
		c := *v
		ns[k] = &c
	}
	return ms, ns
}

func (l *ledger) tries() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d accepted, %d tries answered 4xx, %d cut off without an answer", len(l.notifs), l.refused, l.unknown)
}

// customerMail is a mail to the support address from a customer of its
// own (one sender would reach fetch.sender_rate_limit), long enough that
// a FETCH of it can be cut in the middle.
func customerMail(n int) (raw []byte, msgID string) {
	msgID = fmt.Sprintf("in-%d@customer.example", n)
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Customer %d <customer-%d@customer.example>\r\nTo: Acme Support <%s>\r\n", n, n, account)
	fmt.Fprintf(&b, "Subject: Order %d is late\r\nDate: %s\r\nMessage-ID: <%s>\r\n", n, time.Now().Format(time.RFC1123Z), msgID)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	for i := range 12 {
		fmt.Fprintf(&b, "Line %d of my complaint about order %d, which has not arrived yet.\r\n", i, n)
	}
	return b.Bytes(), msgID
}

// sendMail appends a new customer mail to the mailbox and records it.
func (w *world) sendMail() error {
	n := w.led.next()
	raw, id := customerMail(n)
	uid, err := w.box.Deliver(raw)
	if err != nil {
		return fmt.Errorf("append mail %d to %s: %w", n, w.box.Name(), err)
	}
	w.led.mu.Lock()
	w.led.mails = append(w.led.mails, mail{UID: uid, MessageID: id, At: time.Now()})
	w.led.mu.Unlock()
	return nil
}

// notification is what the helpdesk sends through the relay: from the
// account, to a customer and, for every third, a colleague in CC. Odd
// ones carry a real attachment, so they go direct (DKIM-signed, through
// the smarthost); the others via Gmail, unless the account's sending via
// Gmail is off.
func notification(n int) (data []byte, rcpts []string, msgID string) {
	msgID = fmt.Sprintf("out-%d@helpdesk.faults.test", n)
	rcpts = []string{fmt.Sprintf("customer-%d@customer.example", n)}
	if n%3 == 0 {
		rcpts = append(rcpts, fmt.Sprintf("cc-%d@customer.example", n))
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Acme Support <%s>\r\nTo: <%s>\r\nSubject: Re: Order %d is late\r\n", account, strings.Join(rcpts, ">, <"), n)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n", time.Now().Format(time.RFC1123Z), msgID)
	body := strings.Repeat(fmt.Sprintf("We are looking into order %d and will write again soon.\r\n", n), 6)
	if n%2 == 0 {
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n" + body)
		return b.Bytes(), rcpts, msgID
	}
	b.WriteString("Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n")
	b.WriteString("--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body)
	b.WriteString("--b1\r\nContent-Type: application/pdf; name=\"label.pdf\"\r\nContent-Disposition: attachment; filename=\"label.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	b.WriteString("JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg==\r\n--b1--\r\n")
	return b.Bytes(), rcpts, msgID
}

// sendNotification submits a new notification to the relay, trying again
// after every failure as a helpdesk does, until it gets a 250 or ctx ends
// (then the message is recorded nowhere: it was never accepted).
func (w *world) sendNotification(ctx context.Context) {
	n := w.led.next()
	data, rcpts, id := notification(n)
	for try := 1; ctx.Err() == nil; try++ {
		qid, replied, err := submit(w.relay, account, rcpts, data)
		l := w.led
		l.mu.Lock()
		var se *smtp.SMTPError
		switch {
		case err == nil:
			l.notifs[id] = &notif{MessageID: id, Rcpts: rcpts, QueueID: qid, Accepted: time.Now(), Tries: try}
		case replied && errors.As(err, &se) && se.Code >= 500:
			l.rejected = append(l.rejected, fmt.Sprintf("%s: %v", id, err))
		case replied:
			l.refused++
		default:
			l.unknown++
		}
		l.mu.Unlock()
		if err == nil || (replied && errors.As(err, &se) && se.Code >= 500) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// submit sends one message to the relay and returns the queue id of its
// 250. replied reports whether the relay answered at all (false: the
// outcome is unknown to the client).
func submit(addr, from string, to []string, data []byte) (queueID string, replied bool, err error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", false, err
	}
	// Longer than any answer the relay should take.
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := smtp.NewClient(nc)
	defer c.Close()
	var se *smtp.SMTPError
	fail := func(err error) (string, bool, error) { return "", errors.As(err, &se), err }
	if err := c.Hello("helpdesk.faults.test"); err != nil {
		return fail(err)
	}
	if err := c.Mail(from, nil); err != nil {
		return fail(err)
	}
	for _, rc := range to {
		if err := c.Rcpt(rc, nil); err != nil {
			return fail(err)
		}
	}
	wc, err := c.Data()
	if err != nil {
		return fail(err)
	}
	if _, err := wc.Write(data); err != nil {
		return fail(err)
	}
	resp, err := wc.CloseWithResponse()
	if err != nil {
		return fail(err)
	}
	_ = c.Quit()
	_, id, _ := strings.Cut(resp.StatusText, "queued as ")
	return strings.TrimSpace(id), true, nil
}

// load is a steady stream of customer mail into the mailbox and of
// notifications into the relay, until stop.
type load struct {
	w      *world
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

// startLoad appends a mail every mailEvery and has two helpdesk workers
// each submit a notification every notifEvery (0: none of that kind).
func (w *world) startLoad(mailEvery, notifEvery time.Duration) *load {
	ctx, cancel := context.WithCancel(w.ctx)
	l := &load{w: w, cancel: cancel, errs: make(chan error, 1)}
	pace := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	if mailEvery > 0 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for pace(mailEvery) {
				if err := w.sendMail(); err != nil {
					select {
					case l.errs <- err:
					default:
					}
					return
				}
			}
		}()
	}
	if notifEvery > 0 {
		for range 2 {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for pace(notifEvery) {
					// A notification under way is finished after stop:
					// only the relay's 250 ends a helpdesk's retries.
					w.sendNotification(w.ctx)
				}
			}()
		}
	}
	return l
}

// stop ends the load and waits for the submissions under way to be
// accepted.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
	select {
	case err := <-l.errs:
		l.w.t.Errorf("customer mail stopped: %v", err)
	default:
	}
}

// burst submits n notifications from four helpdesk workers at once and
// returns when each has its 250.
func (w *world) burst(n int) {
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 4 {
				w.sendNotification(w.ctx)
			}
		}()
	}
	wg.Wait()
}
