package tickets

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/redistest"
)

// TestIngestOnRedisCluster runs the store on a one-node Redis Cluster:
// Cluster refuses a script or pipeline whose keys span hash slots
// (CROSSSLOT), so this proves every key of an ingest shares one slot.
func TestIngestOnRedisCluster(t *testing.T) {
	srv := redistest.Start(t, "cluster-enabled yes", "cluster-config-file nodes.conf")
	ctx := context.Background()
	admin := srv.Client(t)
	if err := admin.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383").Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(admin.ClusterInfo(ctx).Val(), "cluster_state:ok") {
		if time.Now().After(deadline) {
			t.Fatal("cluster did not become ok")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { cc.Close() })
	s := NewStore(cc, Options{})
	if s.Key("events") != "{mailgate}:events" {
		t.Fatalf("cluster key = %q, want the prefix as a hash tag", s.Key("events"))
	}
	first := mustIngest(t, s, mail("alice@customer.test", "Cluster", "x", "Message-ID: <c1@c.test>"), Source{})
	reply := mustIngest(t, s, mail("alice@customer.test", "Re: Cluster", "y", "Message-ID: <c2@c.test>", "In-Reply-To: <c1@c.test>"), Source{})
	if !first.Created || reply.Ticket != first.Ticket || reply.ThreadedBy != "in-reply-to" {
		t.Fatalf("on cluster: first %+v, reply %+v", first, reply)
	}
	if err := s.RegisterOutbound(ctx, first.Ticket, "n@helpdesk.test"); err != nil {
		t.Fatal(err)
	}
	if tk := mustGet(t, s, first.Ticket); len(tk.Comments) != 2 {
		t.Fatalf("ticket on cluster has %d comments, want 2", len(tk.Comments))
	}
	if ts, err := s.List(ctx, ListOptions{}); err != nil || len(ts) != 1 {
		t.Fatalf("List on cluster = %v, %v", ts, err)
	}
	token := mustIngest(t, s, mail("alice@customer.test", fmt.Sprintf("Re: [#%d] Cluster", first.Ticket), "z", "Message-ID: <c3@c.test>"), Source{})
	if token.Ticket != first.Ticket || token.ThreadedBy != ruleSubjectToken {
		t.Fatalf("subject token on cluster: %+v", token)
	}
	// A batch: every key of its one script call shares the slot, and a
	// reply threads onto the ticket opened earlier in it.
	rs := mustBatch(t, s, batchOf(
		mail("dan@customer.test", "Batch", "x", "Message-ID: <b1@c.test>"),
		mail("dan@customer.test", "Re: Batch", "y", "Message-ID: <b2@c.test>", "References: <b1@c.test>"),
		mail("alice@customer.test", "Re: Cluster", "z", "Message-ID: <b3@c.test>", "In-Reply-To: <c2@c.test>"),
	))
	if !rs[0].Created || rs[1].Ticket != rs[0].Ticket || rs[1].ThreadedBy != ruleReferences || rs[2].Ticket != first.Ticket {
		t.Fatalf("batch on cluster: %+v", rs)
	}
	// The sender's rate key, too, shares the slot.
	limited := NewStore(cc, Options{SenderRateLimit: 1, SenderRateWindow: time.Hour})
	mustIngest(t, limited, mail("robot@loop.test", "ping", "x", "Message-ID: <l1@loop.test>"), Source{})
	if r := mustIngest(t, limited, mail("robot@loop.test", "ping", "x", "Message-ID: <l2@loop.test>"), Source{}); r.Suppressed != NoiseRateLimited {
		t.Fatalf("second mail over a limit of 1 on cluster: %+v", r)
	}
}
