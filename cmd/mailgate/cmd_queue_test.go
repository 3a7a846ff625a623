package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/smtprelay"
)

const queuedMail = "From: Support <support@example.com>\r\n" +
	"To: customer@example.net\r\n" +
	"Subject: =?UTF-8?Q?R=C3=A9ponse?= [#42]\r\n" +
	"Message-ID: <n1@helpdesk.example.com>\r\n" +
	"Received: from helpdesk\r\n" +
	"\tby relay; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
	"\r\n" +
	"Body: not a header\r\n"

// queueEnv is a Redis holding three queued messages, one of them deferred.
type queueEnv struct {
	redis              *redistest.Server
	q                  *smtprelay.Queue
	deferred, ready, b *smtprelay.Message
}

func newQueueEnv(t *testing.T) *queueEnv {
	t.Helper()
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	q := smtprelay.NewQueue(rdb, smtprelay.QueueOptions{Prefix: config.Defaults().Redis.Prefix})
	e := &queueEnv{redis: srv, q: q,
		deferred: &smtprelay.Message{From: "support@example.com", To: []string{"a@example.net", "b@example.org"}, Ticket: 42,
			Account: "support@example.com", MessageID: "<n1@helpdesk.example.com>", Data: []byte(queuedMail)},
		ready: &smtprelay.Message{From: "support@example.com", To: []string{"c@example.net"}, Data: []byte(queuedMail)},
		b:     &smtprelay.Message{From: "", To: []string{"helpdesk@example.com"}, Data: []byte("Subject: bounce\r\n\r\nx\r\n")},
	}
	for _, m := range []*smtprelay.Message{e.deferred, e.ready, e.b} {
		if err := q.Put(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// A worker takes the oldest and defers it, as after a 4xx.
	if err := q.EnsureGroup(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := q.Next(ctx, "test", 1, time.Second)
	if err != nil || len(got) != 1 || got[0].ID != e.deferred.ID {
		t.Fatalf("Next = %v, %v; want %s", got, err, e.deferred.ID)
	}
	m := got[0]
	m.Attempts, m.Route = 1, "gmail"
	m.LastError = "421 4.7.0 Try again later,\n closing connection. " + strings.Repeat("x", 100)
	m.NextAttempt = time.Now().Add(time.Hour)
	if err := q.Defer(ctx, m); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *queueEnv) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return relayCLI(t, strings.NewReader(""), append([]string{"--redis-url", e.redis.URL, "queue"}, args...)...)
}

func (e *queueEnv) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, stderr := e.run(t, args...)
	if code != 0 {
		t.Fatalf("queue %s = %d\n%s\n%s", strings.Join(args, " "), code, out, stderr)
	}
	return out
}

func TestQueueList(t *testing.T) {
	e := newQueueEnv(t)
	out := e.mustRun(t, "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "3 messages queued, oldest ") || !strings.HasSuffix(lines[0], " ago") {
		t.Fatalf("queue list: want a summary, a header and 3 rows:\n%s", out)
	}
	for _, col := range []string{"ID", "STATE", "AGE", "ATTEMPTS", "NEXT TRY", "ROUTE", "FROM", "TO", "TICKET", "LAST ERROR"} {
		if !strings.Contains(lines[1], col) {
			t.Errorf("queue list header lacks %s: %q", col, lines[1])
		}
	}
	// Rows come oldest first; messages queued in the same millisecond
	// come in any order, so find each row by its id.
	rowOf := func(id string) (string, []string) {
		for _, l := range lines[2:] {
			if strings.HasPrefix(l, id+" ") {
				return l, strings.Fields(l)
			}
		}
		t.Fatalf("queue list has no row for %s:\n%s", id, out)
		return "", nil
	}
	deferredLine, row := rowOf(e.deferred.ID)
	want := []string{e.deferred.ID, "deferred", "", "1", "in", "", "gmail", "support@example.com", "2", "#42", "421", "4.7.0"}
	for i, w := range want {
		if w != "" && (i >= len(row) || row[i] != w) {
			t.Errorf("deferred row field %d = %v, want %q", i, row, w)
		}
	}
	if !strings.HasSuffix(deferredLine, "…") || strings.Contains(deferredLine, "\n closing") {
		t.Errorf("last error not clipped to one line: %q", deferredLine)
	}
	if _, f := rowOf(e.b.ID); f[0] != e.b.ID || f[1] != "queued" || f[4] != "now" || f[5] != "-" || f[6] != "<>" || f[8] != "-" {
		t.Errorf("bounce row = %v, want queued, now, no route, <> sender, no ticket", f)
	}

	out = e.mustRun(t, "list", "--limit", "1")
	if !strings.Contains(out, "(showing the oldest 1: --limit)") || strings.Count(out, "\n") != 3 {
		t.Errorf("queue list --limit 1:\n%s", out)
	}
}

func TestQueueListJSON(t *testing.T) {
	e := newQueueEnv(t)
	var got queueListing
	if err := json.Unmarshal([]byte(e.mustRun(t, "list", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	if got.Queued != 3 || got.Oldest.IsZero() || len(got.Messages) != 3 {
		t.Fatalf("queue list --json = %+v", got)
	}
	m := got.Messages[0]
	if m.ID != e.deferred.ID || m.State != smtprelay.StateDeferred || m.Ticket != 42 || m.NextAttempt.IsZero() || len(m.Data) != 0 {
		t.Errorf("first message = %+v", m)
	}

	empty := &queueEnv{redis: redistest.Start(t)}
	if out := empty.mustRun(t, "list", "--json"); !strings.Contains(out, `"messages": []`) {
		t.Errorf("empty queue --json = %s", out)
	}
	if out := empty.mustRun(t, "list"); !strings.HasPrefix(out, "queue empty") {
		t.Errorf("empty queue = %q", out)
	}
}

func TestQueueShow(t *testing.T) {
	e := newQueueEnv(t)
	out := e.mustRun(t, "show", e.deferred.ID)
	wantOutput(t, "queue show", out,
		"Queue id:     "+e.deferred.ID,
		"State:        deferred, next try in ",
		"To:           a@example.net, b@example.org",
		"Ticket:       #42",
		"Message-ID:   <n1@helpdesk.example.com>",
		fmt.Sprintf("Size:         %d bytes", len(queuedMail)),
		"Last route:   gmail",
		"Last error:   421 4.7.0 Try again later, closing connection.",
		"  Subject: =?UTF-8?Q?R=C3=A9ponse?= [#42]",
		"\tby relay;",
	)
	if strings.Contains(out, "Body:") {
		t.Errorf("queue show printed the body:\n%s", out)
	}

	var got queueShown
	if err := json.Unmarshal([]byte(e.mustRun(t, "show", e.deferred.ID, "--json")), &got); err != nil {
		t.Fatal(err)
	}
	if got.Message == nil || got.ID != e.deferred.ID || !got.ContentStored || len(got.Headers) != 6 || got.Headers[0] != "From: Support <support@example.com>" {
		t.Errorf("queue show ID --json = %+v", got)
	}

	if code, _, stderr := e.run(t, "show", "nope"); code != 1 || !strings.Contains(stderr, "no queued message nope") {
		t.Errorf("show unknown = %d %q", code, stderr)
	}
	if code, _, stderr := e.run(t, "show"); code != 1 || !strings.Contains(stderr, "usage: mailgate queue show ID") {
		t.Errorf("show without ID = %d %q", code, stderr)
	}
}

func TestHeaderLinesCapped(t *testing.T) {
	var b strings.Builder
	for i := range 25 {
		fmt.Fprintf(&b, "X-H%d: v\r\n", i)
	}
	b.WriteString("\r\nbody\r\n")
	lines, more := headerLines([]byte(b.String()), showHeaderLines)
	if len(lines) != 20 || more != 5 || lines[19] != "X-H19: v" {
		t.Errorf("headerLines = %d lines (last %q), %d more; want 20, 5", len(lines), lines[len(lines)-1], more)
	}
}

func TestQueueRetry(t *testing.T) {
	e := newQueueEnv(t)
	out := e.mustRun(t, "retry", e.deferred.ID)
	if !strings.Contains(out, e.deferred.ID+" is ready again") {
		t.Errorf("retry = %q", out)
	}
	// It is in the ready stream again: a worker gets it now.
	got, err := e.q.Next(context.Background(), "test", 10, -1)
	if err != nil || len(got) != 3 || got[len(got)-1].ID != e.deferred.ID {
		t.Errorf("after retry, Next = %d messages (%v), want the 2 never tried and the retried one last", len(got), err)
	}

	if code, _, stderr := e.run(t, "retry", e.ready.ID); code != 1 || !strings.Contains(stderr, "is not deferred") {
		t.Errorf("retry of a ready message = %d %q", code, stderr)
	}
	if code, _, stderr := e.run(t, "retry", "nope"); code != 1 || !strings.Contains(stderr, "no queued message nope") {
		t.Errorf("retry unknown = %d %q", code, stderr)
	}
}

func TestQueueDelete(t *testing.T) {
	e := newQueueEnv(t)
	out := e.mustRun(t, "delete", e.deferred.ID)
	wantOutput(t, "delete output", out, "Deleted "+e.deferred.ID, "from support@example.com to 2 recipients", `subject "Réponse [#42]"`,
		"ticket #42", "deferred, 1 failed attempt", "neither delivered nor bounced")
	if out := e.mustRun(t, "list"); !strings.HasPrefix(out, "2 messages queued") || strings.Contains(out, e.deferred.ID) {
		t.Errorf("after delete, list =\n%s", out)
	}
	if code, _, stderr := e.run(t, "delete", e.deferred.ID); code != 1 || !strings.Contains(stderr, "no queued message") {
		t.Errorf("second delete = %d %q", code, stderr)
	}
}

// TestQueueShowsSending: a message a worker is trying shows as sending,
// with its attempt and worker, not as queued with 0 attempts.
func TestQueueShowsSending(t *testing.T) {
	e := newQueueEnv(t)
	ctx := context.Background()
	got, err := e.q.Next(ctx, "host:42-0", 1, time.Second)
	if err != nil || len(got) != 1 || got[0].ID != e.ready.ID {
		t.Fatalf("Next = %v, %v; want %s", got, err, e.ready.ID)
	}
	got[0].Attempts++
	if err := e.q.Begin(ctx, got[0]); err != nil {
		t.Fatal(err)
	}
	list := e.mustRun(t, "list")
	var row []string
	for _, l := range strings.Split(list, "\n") {
		if strings.HasPrefix(l, e.ready.ID+" ") {
			row = strings.Fields(l)
		}
	}
	if len(row) < 5 || row[1] != "sending" || row[3] != "1" || row[4] != "now" {
		t.Errorf("queue list row = %v, want sending, attempt 1, next try now", row)
	}
	wantOutput(t, "queue show", e.mustRun(t, "show", e.ready.ID), "State:        sending: attempt 1 by delivery worker host:42-0, for ")
	if code, _, stderr := e.run(t, "retry", e.ready.ID); code != 1 || !strings.Contains(stderr, "is not deferred") {
		t.Errorf("retry of a message being sent = %d %q", code, stderr)
	}
}
