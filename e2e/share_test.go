package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/mgproc"
)

// TestServeProcessesShareMailboxes runs `mailgate serve` as separate
// processes on one Redis with 12 mailboxes: two split them 6/6, a third
// joins and each reads 4, the third is killed with -9 and the two others
// take its mailboxes at once (its pid is gone), the second stops with
// SIGTERM and the first reads all 12. Mail arrives all along: each
// becomes one ticket, and no mailbox is ever read by two processes.
func TestServeProcessesShareMailboxes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := newWorld(t, ctx, Config{PollInterval: 2 * time.Second, LeaseTTL: 3 * time.Second, ShutdownGrace: 5 * time.Second})
	var emails []string
	for i := range 12 {
		e := fmt.Sprintf("desk%02d@%s", i, DKIMDomain)
		w.addAccount(e)
		emails = append(emails, e)
	}

	// Each process needs its own relay and HTTP listeners.
	configs := []string{w.config}
	for i := 2; i <= 3; i++ {
		relay, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		httpAddr, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		c, err := w.fakes.WriteConfig(fmt.Sprintf("mailgate-%d.yaml", i), Config{RedisURL: w.redis.URL, RelayListen: relay, HTTPListen: httpAddr,
			PollInterval: 2 * time.Second, LeaseTTL: 3 * time.Second, ShutdownGrace: 5 * time.Second, Smarthost: w.mx.Addr()})
		if err != nil {
			t.Fatal(err)
		}
		configs = append(configs, c)
	}
	serve := func(i int) *mgproc.Process {
		w.config = configs[i-1]
		return w.serve()
	}

	delivered := 0
	deliver := func() {
		e := emails[delivered%len(emails)]
		raw := customerMail(fmt.Sprintf("c%d@customer.test", delivered), fmt.Sprintf("Share %d", delivered), fmt.Sprintf("share%d@customer.test", delivered))
		if _, err := w.fakes.IMAP.Deliver(e, raw, false); err != nil {
			t.Fatal(err)
		}
		delivered++
	}
	// split counts the leases per holder pid; 0 for mailboxes nobody holds.
	split := func() map[int]int {
		pipe := w.rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(emails))
		for i, e := range emails {
			cmds[i] = pipe.Get(ctx, prefix+"lease:"+e)
		}
		_, _ = pipe.Exec(ctx)
		out := map[int]int{}
		for _, c := range cmds {
			parts := strings.SplitN(c.Val(), ":", 3)
			pid := 0
			if len(parts) == 3 {
				pid, _ = strconv.Atoi(parts[1])
			}
			out[pid]++
		}
		return out
	}
	rebalance := func(what string, since time.Time, live ...*mgproc.Process) {
		t.Helper()
		even := func(s map[int]int) bool {
			lo, hi, n := len(emails), 0, 0
			for _, p := range live {
				lo, hi, n = min(lo, s[p.Pid()]), max(hi, s[p.Pid()]), n+s[p.Pid()]
			}
			return n == len(emails) && hi-lo <= 1
		}
		for range len(emails) {
			deliver() // one for each mailbox, whoever reads it now
		}
		for !even(split()) {
			if time.Since(since) > 30*time.Second {
				t.Fatalf("%s: not split evenly after 30s: %v", what, split())
			}
			deliver()
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("%s: every mailbox read, split by pid %v, %v after", what, split(), time.Since(since).Round(10*time.Millisecond))
	}

	start := time.Now()
	p1, p2 := serve(1), serve(2)
	rebalance("two processes start", start, p1, p2)
	join := time.Now()
	p3 := serve(3)
	rebalance("a third joins", join, p1, p2, p3)
	kill := time.Now()
	p3.Kill()
	rebalance("the third is killed (-9)", kill, p1, p2)
	stop := time.Now()
	if err := p2.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p2.Wait(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("serve-2 after SIGTERM: exit %d, %v", code, err)
	}
	rebalance("the second stops (SIGTERM)", stop, p1)

	w.eventually(30*time.Second, "every mail to become a ticket", func() bool {
		n, err := w.rdb.ZCard(ctx, prefix+"tickets").Result()
		return err == nil && n == int64(delivered)
	})
	time.Sleep(time.Second) // a second ticket for a mail would show by now
	if n := w.rdb.ZCard(ctx, prefix+"tickets").Val(); n != int64(delivered) {
		t.Errorf("%d tickets for %d mails", n, delivered)
	}
	for _, e := range emails {
		if n := w.fakes.IMAP.MostSessions(e); n > 1 {
			t.Errorf("%s had %d sessions at once: two readers of one mailbox", e, n)
		}
	}
	t.Logf("%d mails, one ticket each", delivered)
}
