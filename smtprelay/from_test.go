package smtprelay

import (
	"context"
	"slices"
	"testing"
)

// TestNoFromRefusedAtEndOfData: a message without a From field (or with
// an empty one) is refused after the final dot with 550 5.6.0 and a text
// that names what is missing, nothing is queued, and the session goes on:
// the same message with a From is then accepted as it came.
func TestNoFromRefusedAtEndOfData(t *testing.T) {
	var c calls
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback, OnAccept: func(accepted bool, reason string) {
		if !accepted {
			c.add(reason)
		}
	}})
	converse(t, e.addr, []smtpLine{
		{"EHLO helpdesk.test", 250, ""},
		{"MAIL FROM:<support@acme.test>", 250, ""},
		{"RCPT TO:<alice@customer.test>", 250, ""},
		{"DATA", 354, ""},
		{"To: alice@customer.test\r\nSubject: [#42] no author\r\n\r\nHello\r\n.", 550, "5.6.0 Message refused: the From header field is missing; RFC 5322 section 3.6 requires"},
		{"MAIL FROM:<support@acme.test>", 250, ""},
		{"RCPT TO:<alice@customer.test>", 250, ""},
		{"DATA", 354, ""},
		{"From: \r\nSubject: empty author\r\n\r\nHello\r\n.", 550, "5.6.0 Message refused: the From header field is empty"},
		{"MAIL FROM:<support@acme.test>", 250, ""},
		{"RCPT TO:<alice@customer.test>", 250, ""},
		{"DATA", 354, ""},
		{"From: Acme <support@acme.test>\r\nSubject: [#42] with author\r\n\r\nHello\r\n.", 250, "queued as"},
		{"QUIT", 221, ""},
	})
	if got, want := c.take(), []string{RejectHeader, RejectHeader}; !slices.Equal(got, want) {
		t.Errorf("OnAccept refusals = %q, want %q", got, want)
	}
	ms, err := e.q.List(context.Background(), 10)
	if err != nil || len(ms) != 1 {
		t.Fatalf("queue = %v, %v; want only the message with a From", ms, err)
	}
	if ms[0].Ticket != 42 {
		t.Errorf("queued %+v, want the ticket 42 message", ms[0])
	}
}
