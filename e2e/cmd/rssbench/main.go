// Command rssbench measures the resident memory of `mailgate serve` with
// many connected Gmail accounts (target: ≤ 300 MB at 1,000). For each
// account count it starts a private redis-server, one fake Gmail IMAP
// server holding every mailbox and a fake Google OAuth endpoint (in this
// process), connects the accounts straight through package accounts with
// serve's key file, starts the given mailgate binary, waits until every
// account has polled once, lets it settle, and reads VmRSS and VmHWM from
// /proc. bench/rss.sh builds the binaries and runs it.
//
// Each account keeps one IMAP connection open (IDLE), in serve and in this
// process: raise `ulimit -n` above twice the largest count.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/e2e"
	"github.com/mailgate/mailgate/internal/mgproc"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/oauth"
)

func main() {
	bin := flag.String("mailgate", "", "the mailgate `BINARY` to measure")
	counts := flag.String("accounts", "1,100,1000", "comma-separated account `COUNTS`")
	settle := flag.Duration("settle", 10*time.Second, "wait this long after every account polled before sampling")
	keep := flag.Bool("keep", false, "keep each run's directory (serve's log, Redis files)")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "usage: rssbench -mailgate BINARY [-accounts 1,100,1000] [-settle 10s]")
		os.Exit(2)
	}
	fmt.Printf("%-9s %-14s %-8s %-8s %-22s %s\n", "accounts", "all polled in", "RSS MB", "peak MB", "KB per extra account", "IMAP connections")
	var first *result
	for _, s := range strings.Split(*counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "rssbench: bad account count %q\n", s)
			os.Exit(2)
		}
		r, err := measure(*bin, n, *settle, *keep)
		if err != nil {
			fmt.Fprintf(os.Stderr, "rssbench: %d accounts: %v\n", n, err)
			os.Exit(1)
		}
		// What each account costs beyond the first row's.
		marginal := "-"
		if first != nil && n > first.n {
			marginal = fmt.Sprintf("%.0f", float64(r.mem.RSS-first.mem.RSS)/float64(n-first.n))
		} else {
			first = &r
		}
		fmt.Printf("%-9d %-14s %-8.1f %-8.1f %-22s %d\n", n, r.polled.Round(10*time.Millisecond),
			float64(r.mem.RSS)/1024, float64(r.mem.Peak)/1024, marginal, r.conns)
	}
}

type result struct {
	n      int
	polled time.Duration
	mem    e2e.Memory
	conns  int
}

func measure(bin string, n int, settle time.Duration, keep bool) (res result, err error) {
	ctx := context.Background()
	res.n = n
	dir, err := os.MkdirTemp("", fmt.Sprintf("mailgate-rss-%d-", n))
	if err != nil {
		return res, err
	}
	defer func() {
		if keep || err != nil {
			fmt.Fprintf(os.Stderr, "rssbench: %d accounts: files kept in %s\n", n, dir)
			return
		}
		os.RemoveAll(dir)
	}()
	rs, err := redistest.Run(dir, "appendonly yes", "appendfsync always", "maxclients 20000")
	if err != nil {
		return res, err
	}
	defer rs.Kill()
	fakes, err := e2e.StartFakes(dir)
	if err != nil {
		return res, err
	}
	defer fakes.Close()
	relay, err := e2e.FreeAddr()
	if err != nil {
		return res, err
	}
	httpAddr, err := e2e.FreeAddr()
	if err != nil {
		return res, err
	}
	// Production timings: polling every minute, IDLE in between.
	config, err := fakes.WriteConfig("mailgate.yaml", e2e.Config{
		RedisURL: rs.URL, RelayListen: relay, HTTPListen: httpAddr,
		PollInterval: time.Minute, LeaseTTL: 30 * time.Second, ShutdownGrace: 30 * time.Second,
	})
	if err != nil {
		return res, err
	}

	// Connect the accounts as `accounts add` would, without a process each.
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	box, err := oauth.LoadOrCreateKey(filepath.Join(fakes.Dir, "mailgate.key"))
	if err != nil {
		return res, err
	}
	acc := accounts.New(rdb, accounts.Options{Box: box})
	for i := range n {
		email := fmt.Sprintf("support%04d@%s", i, e2e.DKIMDomain)
		fakes.IMAP.AddUser(email)
		if _, err := acc.Connect(ctx, accounts.Account{Email: email, Kind: accounts.KindGmail}, fakes.OAuth.IssueRefreshToken(email)); err != nil {
			return res, err
		}
	}

	p, err := mgproc.StartServe(bin, config, filepath.Join(dir, "serve.log"))
	if err != nil {
		return res, err
	}
	defer func() {
		if !p.Exited() {
			p.Kill()
		}
	}()
	if err := p.WaitLog("mailgate serving", 30*time.Second); err != nil {
		return res, fmt.Errorf("%w\n%s", err, p.Log())
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		list, err := acc.List(ctx)
		if err != nil {
			return res, err
		}
		polled := 0
		for _, a := range list {
			if a.LastPoll.After(p.Started) {
				polled++
			}
		}
		if polled == n {
			break
		}
		if time.Now().After(deadline) || p.Exited() {
			return res, fmt.Errorf("only %d of %d accounts polled; serve's log:\n%s", polled, n, p.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.polled = time.Since(p.Started)
	time.Sleep(settle)
	if res.mem, err = e2e.ReadMemory(p.Pid()); err != nil {
		return res, err
	}
	res.conns = fakes.IMAP.Connections()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return res, err
	}
	if code, err := p.Wait(60 * time.Second); err != nil || code != 0 {
		return res, fmt.Errorf("serve after SIGTERM: exit %d, %v\n%s", code, err, p.Log())
	}
	return res, nil
}
