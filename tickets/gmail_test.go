package tickets

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// A mail in a Gmail conversation (X-GM-THRID) that has a ticket joins it
// when its sender takes part in the ticket, after the header rules and
// before the subject token; a stranger in the conversation, or the same
// thread id in another account, opens a ticket of its own. Every key the
// script touches is declared (as in TestIngestScriptDeclaresEveryKey).
func TestGmailThreadRule(t *testing.T) {
	real := ingestScript
	ingestScript = redis.NewScript(declaredKeysOnly + ingestLua)
	t.Cleanup(func() { ingestScript = real })

	s, _ := newTestStore(t, Options{})
	inThread := func(thr uint64) Source {
		return Source{Origin: "imap:support@acme.test", GmailThreadID: thr, GmailMsgID: thr + 1000}
	}
	first := mustIngest(t, s, mail("alice@customer.test", "Order 77", "where is it", "Message-ID: <o@c.test>"), inThread(111))
	if !first.Created {
		t.Fatalf("first mail: %+v", first)
	}
	stranger := mustIngest(t, s, mail("bob@customer.test", "me too", "x", "Message-ID: <b@c.test>"), inThread(111))
	if !stranger.Created {
		t.Errorf("a stranger in the conversation joined it: %+v", stranger)
	}
	steps := []struct {
		name   string
		raw    []byte
		src    Source
		ticket int64
		rule   string
	}{
		{"same conversation, no headers", mail("alice@customer.test", "another question", "x", "Message-ID: <a2@c.test>"),
			inThread(111), first.Ticket, ruleGmailThread},
		{"headers first", mail("alice@customer.test", "Re: Order 77", "x", "Message-ID: <a3@c.test>", "In-Reply-To: <o@c.test>"),
			inThread(111), first.Ticket, ruleInReplyTo},
		{"before the subject token", mail("alice@customer.test", "Re: [#2] hm", "x", "Message-ID: <a4@c.test>"),
			inThread(111), first.Ticket, ruleGmailThread},
		{"the stranger's ticket did not take the conversation", mail("bob@customer.test", "again", "x", "Message-ID: <b2@c.test>"),
			inThread(111), 0, ""},
	}
	for _, st := range steps {
		r := mustIngest(t, s, st.raw, st.src)
		if st.ticket != 0 && (r.Ticket != st.ticket || r.ThreadedBy != st.rule) {
			t.Errorf("%s: %+v, want ticket %d by %s", st.name, r, st.ticket, st.rule)
		}
		if st.ticket == 0 && !r.Created {
			t.Errorf("%s: %+v, want a new ticket", st.name, r)
		}
	}
	other := inThread(111)
	other.Origin = "imap:sales@acme.test"
	if r := mustIngest(t, s, mail("alice@customer.test", "hello sales", "x", "Message-ID: <a5@c.test>"), other); !r.Created {
		t.Errorf("the same thread id in another account joined: %+v", r)
	}
	tk := mustGet(t, s, first.Ticket)
	if len(tk.Comments) != 4 || tk.Comments[1].ThreadedBy != ruleGmailThread {
		t.Errorf("ticket %d comments %d, second threaded by %q; want 4, gmail-thread", first.Ticket, len(tk.Comments), tk.Comments[1].ThreadedBy)
	}
}
