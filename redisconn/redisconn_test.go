package redisconn

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/redistest"
)

// TestString: what the startup line and errors say is the Redis really
// used, without its password: under Sentinel the sentinels and master
// name, not the default URL that only carries credentials.
func TestString(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{URL: "redis://:secret@10.0.0.5:6379/2"}, "redis://****@10.0.0.5:6379/2"},
		{Options{URL: "redis://:secret@127.0.0.1:6379/0", MasterName: "mymaster", Addrs: []string{"10.0.0.1:26379", "10.0.0.2:26379"}},
			`master "mymaster" via sentinels 10.0.0.1:26379,10.0.0.2:26379`},
		{Options{URL: "redis://10.0.0.9:26379/0", MasterName: "mymaster"}, `master "mymaster" via sentinels 10.0.0.9:26379`},
		{Options{URL: "redis://127.0.0.1:6379/0", Addrs: []string{"10.0.0.1:7000", "10.0.0.2:7000"}}, "cluster via 10.0.0.1:7000,10.0.0.2:7000"},
	} {
		if got := tc.o.String(); got != tc.want {
			t.Errorf("%+v: String() = %q, want %q", tc.o, got, tc.want)
		}
		if strings.Contains(tc.o.String(), "secret") {
			t.Errorf("String() = %q shows the password", tc.o.String())
		}
	}
}

// TestSentinel finds the master through a real Sentinel; the URL's host
// (nothing listens there) only carries the database number.
func TestSentinel(t *testing.T) {
	master := redistest.Start(t)
	sentinel := redistest.WatchMaster(t, master, "helpdesk")
	rdb, err := New(Options{URL: "redis://127.0.0.1:1/0", MasterName: "helpdesk", Addrs: []string{sentinel.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET through the sentinel's master: %v", err)
	}
	if got := master.Client(t).Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("the master holds %q, want the value written through the Sentinel client", got)
	}
}

// TestCluster writes keys that hash to every master of a real 3-master
// Cluster through the seeds in Addrs. Replicas are left out: they copy
// their master's keys a moment later, so one may not hold them yet.
func TestCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	rdb, err := New(Options{URL: "redis://127.0.0.1:1/0", Addrs: c.Addrs()[:1]})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx := context.Background()
	for i := range 30 {
		if err := rdb.Set(ctx, fmt.Sprintf("key-%d", i), i, 0).Err(); err != nil {
			t.Fatalf("SET key-%d on the cluster: %v", i, err)
		}
	}
	masters := 0
	for _, n := range c.Nodes {
		nc := n.Client(t)
		if role, _ := nc.Do(ctx, "ROLE").Slice(); len(role) == 0 || role[0] != "master" {
			continue
		}
		masters++
		if size := nc.DBSize(ctx).Val(); size == 0 {
			t.Errorf("master %s holds no key: the test did not reach every master", n.Addr)
		}
	}
	if masters != 3 {
		t.Errorf("%d masters answered ROLE, want 3", masters)
	}
}
