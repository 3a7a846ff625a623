package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/redisconn"
	"github.com/mailgate/mailgate/tickets"
)

// TestConsumerReadsWhatMailgateWrote runs the README's example consumer on
// the events of two real mails: a new ticket and its threaded reply.
func TestConsumerReadsWhatMailgateWrote(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	st := tickets.NewStore(rdb, tickets.Options{})
	ctx := context.Background()
	for _, name := range []string{"plain-ascii.eml", "reply-in-reply-to.eml"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "mailparse", "testdata", "mail", name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Ingest(ctx, raw, tickets.Source{}); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := consume(ctx, rdb, st.Key("events"), "helpdesk", "c1", "0", true, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "new ticket #1") || !strings.Contains(lines[1], "comment 2 on #1") {
		t.Fatalf("consumer printed:\n%s\nwant a new ticket #1 then comment 2 on #1", out.String())
	}
	if p := rdb.XPending(ctx, st.Key("events"), "helpdesk").Val(); p.Count != 0 {
		t.Errorf("%d events left unacknowledged", p.Count)
	}
	// A second run of the same group has nothing left to read.
	out.Reset()
	consume(ctx, rdb, st.Key("events"), "helpdesk", "c1", "0", true, &out)
	if out.Len() != 0 {
		t.Errorf("second run re-read events: %s", out.String())
	}
}

// ingestTwo stores two real mails through mailgate's ticket store on rdb:
// a new ticket and its threaded reply.
func ingestTwo(t *testing.T, rdb redis.UniversalClient) {
	t.Helper()
	st := tickets.NewStore(rdb, tickets.Options{})
	for _, name := range []string{"plain-ascii.eml", "reply-in-reply-to.eml"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "mailparse", "testdata", "mail", name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Ingest(context.Background(), raw, tickets.Source{}); err != nil {
			t.Fatal(err)
		}
	}
}

// consumeAs runs the consumer as a helpdesk would, with these arguments,
// and returns what it printed.
func consumeAs(t *testing.T, argv ...string) string {
	t.Helper()
	a, err := parseArgs(append(argv, "-once"))
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := redisconn.New(a.redis)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	var out bytes.Buffer
	if err := consume(context.Background(), rdb, eventsKey(rdb, a.prefix), a.group, a.consumer, a.from, a.once, &out); err != nil {
		t.Fatalf("consumer %s: %v", strings.Join(argv, " "), err)
	}
	return out.String()
}

// TestConsumerOnRedisCluster: on a 3-master Cluster the events stream is
// "{mailgate}:events", on whichever node owns that slot. The consumer,
// given the seeds as mailgate is, finds it, where a plain client would
// be answered MOVED.
func TestConsumerOnRedisCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	mailgate, err := redisconn.New(redisconn.Options{Addrs: c.Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer mailgate.Close()
	ingestTwo(t, mailgate)

	out := consumeAs(t, "-redis-addrs", strings.Join(c.Addrs(), ","))
	if !strings.Contains(out, "new ticket #1") || !strings.Contains(out, "comment 2 on #1") {
		t.Fatalf("consumer on the cluster printed:\n%s\nwant the new ticket #1 and its comment", out)
	}
	if out := consumeAs(t, "-redis-addrs", c.Addrs()[2]); out != "" {
		t.Errorf("a second run from another seed re-read events:\n%s", out)
	}
}

// TestConsumerThroughSentinel: with the sentinels and the master's name
// the consumer reads the master's stream; redis.url's host is not used.
func TestConsumerThroughSentinel(t *testing.T) {
	master := redistest.Start(t)
	sentinel := redistest.WatchMaster(t, master, "helpdesk-redis")
	ingestTwo(t, master.Client(t))

	t.Setenv("MAILGATE_REDIS_ADDRS", sentinel.Addr)
	t.Setenv("MAILGATE_REDIS_MASTER_NAME", "helpdesk-redis")
	out := consumeAs(t)
	if !strings.Contains(out, "new ticket #1") || !strings.Contains(out, "comment 2 on #1") {
		t.Fatalf("consumer through Sentinel (from mailgate's environment variables) printed:\n%s", out)
	}
}
