package imapfetch

import (
	"context"
	"testing"

	"github.com/mailgate/mailgate/internal/fakegmail"
)

// TestAliasMailBecomesTickets: Gmail delivers mail to a "Send mail as"
// alias into the account's INBOX. It becomes a ticket like mail to the
// account; the alias is a support address, so it is never listed as a
// CC of the ticket, and mail From it is the helpdesk's own, not a ticket.
func TestAliasMailBecomesTickets(t *testing.T) {
	const alias = "help@example.com"
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	if err := e.acc.SetAliases(context.Background(), alice, []string{alias}, nil); err != nil {
		t.Fatal(err)
	}
	f := New(e.acc, e.st, e.options())
	pollOnce(t, f, alice)

	toAlias := "From: Carol <carol@customer.test>\r\nTo: Help <" + alias + ">\r\nCc: dave@customer.test, " + alias + "\r\n" +
		"Subject: Printer on fire\r\nMessage-ID: <alias1@customer.test>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0100\r\n\r\nHelp.\r\n"
	fromAlias := "From: Help <" + alias + ">\r\nTo: carol@customer.test\r\n" +
		"Subject: Our own mail\r\nMessage-ID: <alias2@example.com>\r\nDate: Tue, 24 Nov 2026 10:01:00 +0100\r\n\r\nSent by us.\r\n"
	for _, raw := range []string{toAlias, fromAlias} {
		if _, err := e.gm.Deliver(alice, []byte(raw), false); err != nil {
			t.Fatal(err)
		}
	}
	if rep := pollOnce(t, f, alice); rep.Created != 1 || rep.Suppressed != 1 {
		t.Fatalf("PollOnce = %+v, want 1 ticket (mail to the alias) and 1 suppressed (mail from it)", rep)
	}
	tk := e.tickets()["Printer on fire"]
	if tk == nil {
		t.Fatalf("no ticket for the mail to the alias; tickets %v", keys(e.tickets()))
	}
	if tk.Requester.Email != "carol@customer.test" {
		t.Errorf("requester = %q, want carol", tk.Requester.Email)
	}
	if len(tk.CC) != 1 || tk.CC[0].Email != "dave@customer.test" {
		t.Errorf("CC = %+v, want only dave: the alias is a support address", tk.CC)
	}
}
