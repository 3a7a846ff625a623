package tickets

import (
	"context"
	"testing"
	"time"
)

func TestNoiseOpensNoTicket(t *testing.T) {
	cases := []struct {
		name   string
		raw    []byte
		reason string
	}{
		{"auto-reply file", readMail(t, "auto-reply.eml"), NoiseAutoReply},
		{"x-autoreply", mail("ooo@customer.test", "Out of office", "away", "Message-ID: <n1@c.test>", "X-Autoreply: yes"), NoiseAutoReply},
		{"precedence bulk", mail("news@list.test", "Weekly news", "x", "Message-ID: <n2@c.test>", "Precedence: bulk"), NoiseAutoReply},
		{"own address", mail("support@acme.test", "Your request", "x", "Message-ID: <n3@c.test>"), NoiseOwnAddress},
		{"bounce file", readMail(t, "bounce.eml"), NoiseBounce},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, rdb := newTestStore(t, Options{})
			r := mustIngest(t, s, tc.raw, Source{})
			if r.Suppressed != tc.reason || r.Created || r.EventID == "" {
				t.Fatalf("Ingest = %+v, want suppressed as %q with an event", r, tc.reason)
			}
			if n := rdb.ZCard(context.Background(), s.Key("tickets")).Val(); n != 0 {
				t.Errorf("%d tickets, want none", n)
			}
			again := mustIngest(t, s, tc.raw, Source{})
			if !again.Duplicate {
				t.Errorf("second fetch of the same noise = %+v, want duplicate", again)
			}
		})
	}
	t.Run("auto-submitted no is a person", func(t *testing.T) {
		s, _ := newTestStore(t, Options{})
		r := mustIngest(t, s, mail("a@customer.test", "Hi", "x", "Message-ID: <n4@c.test>", "Auto-Submitted: no"), Source{})
		if !r.Created {
			t.Fatalf("Ingest = %+v, want a ticket", r)
		}
	})
}

func TestBounceIsReportedOnItsTicket(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	ctx := context.Background()
	r := mustIngest(t, s, mail("alice@customer.test", "Question", "x", "Message-ID: <q21@customer.test>"), Source{})
	// The helpdesk's notification about this ticket bounced; bounce.eml
	// returns it with Message-ID <ticket-21-comment-1@acme.test>.
	if err := s.RegisterOutbound(ctx, r.Ticket, "ticket-21-comment-1@acme.test"); err != nil {
		t.Fatal(err)
	}
	b := mustIngest(t, s, readMail(t, "bounce.eml"), Source{})
	if b.Suppressed != NoiseBounce || b.Ticket != r.Ticket {
		t.Fatalf("Ingest(bounce) = %+v, want bounce on #%d", b, r.Ticket)
	}
	ev := rdb.XRevRangeN(ctx, s.Key("events"), "+", "-", 1).Val()
	if len(ev) != 1 || ev[0].Values["type"] != string(EventMailBounced) || ev[0].Values["ticket"] != "1" {
		t.Fatalf("last event = %+v, want mail.bounced for ticket 1", ev)
	}
	if tk := mustGet(t, s, r.Ticket); tk.CommentCount != 1 {
		t.Errorf("ticket has %d comments, want the bounce not added as one", tk.CommentCount)
	}
}

func TestSenderRateLimitStopsALoop(t *testing.T) {
	s, rdb := newTestStore(t, Options{SenderRateLimit: 3, SenderRateWindow: time.Hour})
	ctx := context.Background()
	var suppressed int
	for i := range 6 {
		r := mustIngest(t, s, mail("robot@loop.test", "ping", "pong", "Message-ID: <loop"+string(rune('a'+i))+"@loop.test>"), Source{})
		if r.Suppressed == NoiseRateLimited {
			suppressed++
		}
	}
	if suppressed != 3 {
		t.Fatalf("%d mails suppressed, want 3 (6 sent, limit 3)", suppressed)
	}
	warnings := 0
	for _, e := range rdb.XRange(ctx, s.Key("events"), "-", "+").Val() {
		if e.Values["type"] == string(EventSenderRateLimited) {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("%d rate-limit warnings, want exactly 1", warnings)
	}
	// The initial import is exempt: old mail is not a live loop.
	r := mustIngest(t, s, mail("robot@loop.test", "old", "x", "Message-ID: <old@loop.test>"), Source{SuppressTriggers: true})
	if r.Suppressed != "" {
		t.Errorf("imported mail suppressed as %q", r.Suppressed)
	}
}

func TestQuarantineKeepsRawAndPublishes(t *testing.T) {
	s, rdb := newTestStore(t, Options{})
	ctx := context.Background()
	raw := readMail(t, "truncated.eml")
	if err := s.Quarantine(ctx, raw, "support@acme.test", 7, "store: boom"); err != nil {
		t.Fatal(err)
	}
	qs, err := s.QuarantineList(ctx)
	if err != nil || len(qs) != 1 || qs[0].UID != 7 || qs[0].Reason != "store: boom" {
		t.Fatalf("QuarantineList = %+v, %v", qs, err)
	}
	got, err := s.Raw(ctx, qs[0].Raw)
	if err != nil || string(got) != string(raw) {
		t.Errorf("raw of quarantined mail not kept whole: %v", err)
	}
	ev := rdb.XRange(ctx, s.Key("events"), "-", "+").Val()
	if len(ev) != 1 || ev[0].Values["type"] != string(EventMailQuarantined) {
		t.Errorf("events = %+v, want one mail.quarantined", ev)
	}
}
