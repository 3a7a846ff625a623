package smtprelay

import (
	"context"
	"strings"
	"testing"
)

// TestHeaderFromIsChecked: the envelope sender is allowed in each case;
// only the header From decides.
func TestHeaderFromIsChecked(t *testing.T) {
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback, AllowedSenders: []string{"billing.acme.test", "Sales@Partner.test"}})
	for _, tc := range []struct {
		name, from, want string
	}{
		{"foreign", "From: The CEO <ceo@other-bank.example>", "550 5.7.1 From header address <ceo@other-bank.example> refused"},
		{"one of two foreign", "From: support@acme.test, Mallory <mallory@evil.example>", "550 5.7.1 From header address <mallory@evil.example> refused"},
		{"support address", "From: Acme Support <Support@Acme.test>", "250 2.0.0 OK: queued as "},
		{"allowed domain", "From: Invoices <invoices@billing.acme.test>", "250 2.0.0 OK: queued as "},
		{"allowed address", "From: sales@partner.test", "250 2.0.0 OK: queued as "},
		{"both ours", "From: support@acme.test, invoices@billing.acme.test", "250 2.0.0 OK: queued as "},
		{"unreadable", "From: <<<", "550 5.7.1 The From header cannot be read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, e.addr)
			c.cmd("EHLO helpdesk.test")
			got := c.send("support@acme.test", "alice@customer.test", tc.from+"\nTo: alice@customer.test\nSubject: invoice\n\nPay now\n")
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("DATA with %q: %q, want %q...", tc.from, got, tc.want)
			}
		})
	}
	if depth, _, _ := e.q.Stats(context.Background()); depth != 4 {
		t.Errorf("queue depth %d, want the 4 messages with our From only", depth)
	}
}
