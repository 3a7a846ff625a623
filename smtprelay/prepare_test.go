package smtprelay

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// prepare is prepareRead for tests that start from a message's bytes.
func prepare(data []byte, from string, to []string, hostname string, now time.Time, tr *trace) *Message {
	return prepareRead(data, readHeader(data), from, to, hostname, now, tr)
}

// The header is read once and the body copied from where it starts: a
// header longer than the reader's buffer, with folded fields, must still
// leave every body byte in place and no header field lost or doubled.
func TestPrepareKeepsBodyAfterLongHeader(t *testing.T) {
	var hdr strings.Builder
	hdr.WriteString("From: Support <support@acme.example>\r\nTo: customer@example.org\r\nSubject: [#42] long\r\n")
	for i := range 200 {
		fmt.Fprintf(&hdr, "X-Trace-%d: %s\r\n\tfolded %d\r\n", i, strings.Repeat("v", 40), i)
	}
	body := "First line\r\n\r\nFrom the body, not a header: x\r\n" + strings.Repeat("body ", 3000) + "\r\n"
	data := []byte(hdr.String() + "\r\n" + body)
	if hdr.Len() < 2*4096 {
		t.Fatalf("header of %d bytes does not span the reader's buffer", hdr.Len())
	}
	tr := &trace{hostname: "relay.acme.example"}
	m := prepareRead(data, readHeader(data), "support@acme.example", []string{"customer@example.org"}, "relay.acme.example", time.Now(), tr)
	head, got, ok := bytes.Cut(m.Data, []byte("\r\n\r\n"))
	if !ok || string(got) != body {
		t.Fatalf("body after prepare differs from the body sent (%d bytes, want %d)", len(got), len(body))
	}
	for i := range 200 {
		if n := bytes.Count(head, fmt.Appendf(nil, "X-Trace-%d: ", i)); n != 1 {
			t.Fatalf("field X-Trace-%d appears %d times in the prepared header", i, n)
		}
	}
	if m.Ticket != 42 || !bytes.HasPrefix(m.Data, []byte("Received: ")) || !bytes.Contains(head, []byte("\r\nMessage-Id: <")) {
		t.Errorf("prepared message: ticket %d, header starts %q; want ticket 42, Received on top and a Message-Id", m.Ticket, head[:min(len(head), 40)])
	}
}
