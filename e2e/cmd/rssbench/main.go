// Command rssbench measures the resident memory and idle CPU of `mailgate
// serve` with many connected Gmail accounts (target: 10,000 accounts in
// IDLE in ≤ 300 MB, under 2 % of a core, all polled within 60 s). For each
// account count it starts a private redis-server, one fake Gmail IMAP
// server holding every mailbox and a fake Google OAuth endpoint (in this
// process), connects the accounts straight through package accounts with
// serve's key file, starts the given mailgate binary, waits until every
// account has polled once, lets it settle, and reads VmRSS and VmHWM from
// /proc, the CPU serve used while settling (utime+stime in
// /proc/<pid>/stat), and goroutines, heap and stacks from serve's /metrics.
// bench/rss.sh builds the binaries and runs it.
//
// Each account keeps one IMAP connection open (IDLE), in serve and in this
// process: each process needs `ulimit -n` above the largest count plus a
// margin (Go raises its soft limit to the hard one at start).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
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
	counts := flag.String("accounts", "1,1000,10000", "comma-separated account `COUNTS`")
	settle := flag.Duration("settle", 65*time.Second, "wait this long after every account polled before sampling; idle CPU is measured over it, so it should hold a poll of each account (one a minute)")
	keep := flag.Bool("keep", false, "keep each run's directory (serve's log, Redis files)")
	profile := flag.Bool("pprof", false, "save serve's CPU profile over the settle window and its heap and goroutine profiles after it in each run's directory (kept)")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "usage: rssbench -mailgate BINARY [-accounts 1,1000,10000] [-settle 65s]")
		os.Exit(2)
	}
	fmt.Printf("%-8s %-10s %-7s %-7s %-9s %-8s %-10s %-8s %-8s %-8s %s\n", "accounts", "polled in", "RSS MB", "peak MB",
		"KB/extra", "idle CPU", "goroutines", "heap MB", "stack MB", "fake MB", "IMAP conns")
	var first *result
	for _, s := range strings.Split(*counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "rssbench: bad account count %q\n", s)
			os.Exit(2)
		}
		r, err := measure(*bin, n, *settle, *keep, *profile)
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
		fmt.Printf("%-8d %-10s %-7.1f %-7.1f %-9s %-8s %-10.0f %-8.1f %-8.1f %-8.1f %d\n", n, r.polled.Round(10*time.Millisecond),
			float64(r.mem.RSS)/1024, float64(r.mem.Peak)/1024, marginal, fmt.Sprintf("%.2f%%", r.cpu),
			r.metrics["go_goroutines"], r.metrics["go_memstats_heap_inuse_bytes"]/(1<<20),
			r.metrics["go_memstats_stack_inuse_bytes"]/(1<<20), float64(r.fake.RSS)/1024, r.conns)
	}
}

type result struct {
	n       int
	polled  time.Duration
	mem     e2e.Memory
	fake    e2e.Memory // this process: the fake Gmail's side of every connection
	cpu     float64    // serve's CPU while settling, % of one core
	metrics map[string]float64
	conns   int
}

func measure(bin string, n int, settle time.Duration, keep, profile bool) (res result, err error) {
	keep = keep || profile
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
		Pprof: profile,
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
	cpu0, err := cpuTime(p.Pid())
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	pprofURL := "http://" + httpAddr + "/debug/pprof/"
	cpuDone := make(chan error, 1)
	if profile {
		secs := max(1, int((settle - 5*time.Second).Seconds()))
		go func() {
			cpuDone <- save(fmt.Sprintf("%sprofile?seconds=%d", pprofURL, secs), filepath.Join(dir, "cpu.pprof"))
		}()
	}
	time.Sleep(settle)
	cpu1, err := cpuTime(p.Pid())
	if err != nil {
		return res, err
	}
	res.cpu = 100 * (cpu1 - cpu0).Seconds() / time.Since(t0).Seconds()
	if res.mem, err = e2e.ReadMemory(p.Pid()); err != nil {
		return res, err
	}
	if res.fake, err = e2e.ReadMemory(os.Getpid()); err != nil {
		return res, err
	}
	if res.metrics, err = scrape("http://" + httpAddr + "/metrics"); err != nil {
		return res, err
	}
	if profile {
		if err := <-cpuDone; err != nil {
			return res, err
		}
		if err := save(pprofURL+"heap?gc=1", filepath.Join(dir, "heap.pprof")); err != nil {
			return res, err
		}
		if err := save(pprofURL+"goroutine?debug=1", filepath.Join(dir, "goroutines.txt")); err != nil {
			return res, err
		}
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

// cpuTime is the user plus system CPU time pid has used so far, from
// /proc/<pid>/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; it ends at the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// scrape reads the unlabelled samples of serve's /metrics (go_goroutines,
// go_memstats_*).
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	m := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			m[name] = f
		}
	}
	return m, sc.Err()
}

// save writes what url answers to path.
func save(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
