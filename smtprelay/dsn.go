package smtprelay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime/multipart"
	"net/textproto"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/internal/oneline"
	"github.com/mailgate/mailgate/tickets"
)

// bounce tells the sender that rcpts could not be delivered: a delivery
// status notification (RFC 3464) queued like any message, and a
// delivery.failed event for the helpdesk. Nothing accepted disappears
// without one of them.
func (r *Relay) bounce(ctx context.Context, m *Message, failed map[string]error) {
	rcpts := keys(failed)
	r.log.Warn("relay: delivery failed", "queue_id", m.ID, "ticket", m.Ticket, "rcpts", strings.Join(rcpts, ","))
	if r.opts.Publish != nil {
		errs := map[string]string{}
		for rc, e := range failed {
			errs[rc] = e.Error()
		}
		r.opts.Publish(ctx, tickets.EventDeliveryFailed, m.Ticket, map[string]any{
			"queue_id": m.ID, "message_id": m.MessageID, "from": m.From, "failed": errs})
	}
	if err := r.queueDSN(ctx, m, failed); err != nil {
		// Kept with the try's outcome, and queued again with it.
		r.log.Error("relay: cannot queue the bounce yet", "queue_id", m.ID, "err", err)
		m.unbounced = failed
	}
}

// queueDSN queues the delivery status notification of failed to m's
// sender.
func (r *Relay) queueDSN(ctx context.Context, m *Message, failed map[string]error) error {
	if m.From == "" {
		// Never bounce a bounce (RFC 5321 section 6.1: mail loops).
		return nil
	}
	if bad := checkSender(m.From); bad != nil {
		// A DSN to it would bounce in turn; the event above is the notice.
		r.log.Error("relay: no DSN: the sender address cannot receive one", "queue_id", m.ID, "err", bad)
		return nil
	}
	dsn := buildDSN(r.opts.Hostname, r.opts.Now(), m, failed)
	return r.q.Put(ctx, &Message{From: "", To: []string{m.From}, Data: dsn, Ticket: m.Ticket})
}

// buildDSN writes a multipart/report; report-type=delivery-status: a
// human explanation, the machine-readable status per recipient (RFC 3464
// section 2), and the headers of the original message.
func buildDSN(hostname string, now time.Time, m *Message, failed map[string]error) []byte {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)

	var human strings.Builder
	fmt.Fprintf(&human, "This is the mail system at %s.\r\n\r\nYour message could not be delivered to the following recipients:\r\n\r\n", hostname)
	for _, rc := range keys(failed) {
		fmt.Fprintf(&human, "<%s>: %s\r\n", printable(rc), oneline.Of(failed[rc].Error()))
	}
	part, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/plain; charset=utf-8"}, "Content-Description": {"Notification"}})
	part.Write([]byte(human.String()))

	var st strings.Builder
	fmt.Fprintf(&st, "Reporting-MTA: dns; %s\r\nX-Mailgate-Queue-ID: %s\r\nArrival-Date: %s\r\n", hostname, m.ID, m.CreatedAt.Format(time.RFC1123Z))
	for _, rc := range keys(failed) {
		status, diag := dsnStatus(failed[rc])
		fmt.Fprintf(&st, "\r\nFinal-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\n", printable(rc), status)
		if diag != "" {
			fmt.Fprintf(&st, "Diagnostic-Code: smtp; %s\r\n", diag)
		}
	}
	part, _ = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"message/delivery-status"}, "Content-Description": {"Delivery report"}})
	part.Write([]byte(st.String()))

	part, _ = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/rfc822-headers"}, "Content-Description": {"Undelivered Message Headers"}})
	part.Write(headerBytes(m.Data))
	mw.Close()

	var out bytes.Buffer
	fmt.Fprintf(&out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", hostname)
	fmt.Fprintf(&out, "To: <%s>\r\n", m.From)
	fmt.Fprintf(&out, "Subject: Undelivered Mail Returned to Sender\r\n")
	fmt.Fprintf(&out, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&out, "Message-Id: <%s>\r\n", newMessageID(hostname, ""))
	if m.MessageID != "" {
		fmt.Fprintf(&out, "In-Reply-To: <%s>\r\nReferences: <%s>\r\n", m.MessageID, m.MessageID)
	}
	// RFC 3834: an automatic message, which nobody should answer.
	fmt.Fprintf(&out, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n")
	fmt.Fprintf(&out, "Content-Type: multipart/report; report-type=delivery-status; boundary=\"%s\"\r\n\r\n", mw.Boundary())
	out.Write(body.Bytes())
	return out.Bytes()
}

// dsnStatus gives the RFC 3463 status of a failure and the SMTP reply to
// quote as diagnostic.
func dsnStatus(err error) (status, diag string) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		ec := se.EnhancedCode
		if ec == smtp.NoEnhancedCode || ec[0] == 0 {
			ec = smtp.EnhancedCode{se.Code / 100, 0, 0}
		}
		return fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2]), fmt.Sprintf("%d %d.%d.%d %s", se.Code, ec[0], ec[1], ec[2], oneline.Of(se.Message))
	}
	var ae *addressError
	if errors.As(err, &ae) {
		ec := ae.status()
		return fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2]), ""
	}
	if isTemporary(err) {
		// A temporary failure that lasted past the queue lifetime.
		return "4.4.7", ""
	}
	return "5.0.0", ""
}

// headerBytes returns the header section of a message.
func headerBytes(data []byte) []byte {
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		return data[:i+2]
	}
	if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
		return data[:i+1]
	}
	return data
}

// keys returns the recipients of m, sorted.
func keys(m map[string]error) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
