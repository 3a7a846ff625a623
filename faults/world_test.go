package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/fakeworld"
	"github.com/mailgate/mailgate/internal/faultproxy"
	"github.com/mailgate/mailgate/internal/freeport"
	"github.com/mailgate/mailgate/internal/mgproc"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/internal/rkey"
	"github.com/mailgate/mailgate/tlsmode"
)

// account is the one Gmail account every scenario connects.
const account = "support@" + fakeworld.DKIMDomain

// resumeBound is how soon after a fault heals mail must flow again in
// every scenario. It is generous, so that a slow machine does not fail the
// suite; the figures measured are logged, for README.
const resumeBound = 15 * time.Second

// drainTimeout is how long, after the load stops, the suite waits for
// every mail to be a ticket and every accepted message delivered before it
// calls the missing ones lost. Longer than resumeBound, so that a slow
// resume shows as slow rather than as a loss.
const drainTimeout = 45 * time.Second

type topology int

const (
	standalone topology = iota // one redis-server, appendonly yes, appendfsync always
	sentinel                   // a master, a replica and three sentinels
	cluster                    // three masters and three replicas
)

func (tp topology) String() string {
	return [...]string{"standalone", "sentinel", "cluster"}[tp]
}

// world is one scenario's installation: Redis, the mailbox, the fakes of
// Google and of the smarthost, a fault proxy in front of the mailbox and
// of the smarthost, mailgate's configuration, and the serve processes.
type world struct {
	t     *testing.T // the test or phase running now
	root  *testing.T // the scenario: processes live as long as it does
	ctx   context.Context
	topo  topology
	fakes *fakeworld.World
	mx    *fakesmtp.Server // the smarthost, in plaintext so that mxPx sees SMTP
	box   mailbox
	imap  *faultproxy.Proxy // mailgate → mailbox
	smtp  *faultproxy.Proxy // mailgate → smarthost

	redis    *redistest.Server // standalone
	sentinel *redistest.Sentinel
	cluster  *redistest.Cluster
	rdb      redis.UniversalClient
	prefix   string // the key prefix mailgate uses on rdb
	acc      *accounts.Store

	config string
	relay  string // relay.listen
	serves int
	led    *ledger
	allow  allowance // copies that may come twice: see allowance
}

func newWorld(t *testing.T, topo topology) *world {
	t.Helper()
	need(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w := &world{t: t, root: t, ctx: ctx, topo: topo, led: newLedger(), allow: allowance{}}
	// Every Redis is as durable as README asks: a 250 is a promise only as
	// good as the fsync behind it.
	durable := []string{"appendonly yes", "appendfsync always"}
	switch topo {
	case standalone:
		w.redis = redistest.Start(t, durable...)
		w.rdb = w.redis.Client(t)
	case sentinel:
		w.sentinel = redistest.StartSentinel(t, durable...)
		w.rdb = w.sentinel.Client(t)
	case cluster:
		w.cluster = redistest.StartCluster(t, durable...)
		w.rdb = w.cluster.Client(t)
	}
	w.prefix = rkey.Prefix(w.rdb, "mailgate:")
	w.acc = accounts.New(w.rdb, accounts.Options{})

	var err error
	if w.fakes, err = fakeworld.Start(fakeworld.Options{Dir: t.TempDir(), DKIMAlgorithm: dkim.AlgoEd25519, DKIMSelector: "faults"}); err != nil {
		t.Fatalf("fakeworld: %v", err)
	}
	t.Cleanup(w.fakes.Close)
	// The smarthost offers no STARTTLS: the proxy must read the SMTP
	// dialogue to cut it mid-DATA or on the final dot.
	if w.mx, err = fakesmtp.NewMX(fakesmtp.MXOptions{Hostname: "smarthost.faults.test"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.mx.Close() })
	w.box = newMailbox(t, w.fakes, account)
	w.imap = faultproxy.Start(t, w.box.Addr())
	w.smtp = faultproxy.Start(t, w.mx.Addr())
	w.writeConfig()
	w.addAccount()
	t.Logf("world: Redis %s, IMAP from %s, relay on %s", topo, w.box.Name(), w.relay)
	return w
}

// writeConfig writes mailgate's configuration: the fakes, the proxies, and
// the tunings an operator of a small helpdesk would choose (a retry one
// second after a failed try, reconnects backing off to 2s at most), with
// every other setting at its default (lease_ttl 30s, 4 workers).
func (w *world) writeConfig() {
	t := w.t
	cfg := config.Defaults()
	w.fakes.Configure(cfg)
	cfg.Google.IMAPAddr, cfg.Google.IMAPTLS = w.imap.Addr(), tlsmode.Plain
	switch w.topo {
	case standalone:
		cfg.Redis.URL = w.redis.URL
	case sentinel:
		addrs := w.sentinel.Addrs()
		cfg.Redis.URL, cfg.Redis.Addrs, cfg.Redis.MasterName = "redis://"+addrs[0]+"/0", addrs[1:], w.sentinel.MasterName
	case cluster:
		addrs := w.cluster.Addrs()
		cfg.Redis.URL, cfg.Redis.Addrs = "redis://"+addrs[0]+"/0", addrs[1:]
	}
	cfg.Fetch.PollInterval = config.Duration(2 * time.Second)
	cfg.Fetch.BackoffMax = config.Duration(2 * time.Second)
	var err error
	if w.relay, err = freeport.Addr(); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Listen, err = freeport.Addr(); err != nil {
		t.Fatal(err)
	}
	cfg.Relay.Listen = w.relay
	cfg.Relay.Hostname = "relay.faults.test"
	cfg.Relay.Smarthost = w.smtp.Addr()
	cfg.Relay.RetrySchedule = []config.Duration{config.Duration(time.Second)}
	// The helpdesk's domain may send even when Redis lost the accounts
	// (restarted empty), so the relay still has something to deliver.
	cfg.Relay.AllowedSenders = []string{fakeworld.DKIMDomain}
	cfg.ShutdownGrace = config.Duration(5 * time.Second)
	y, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	w.config = filepath.Join(w.fakes.Dir, "mailgate.yaml")
	if err := os.WriteFile(w.config, y, 0o600); err != nil {
		t.Fatal(err)
	}
}

// mailgate runs a CLI command and returns its standard output.
func (w *world) mailgate(args ...string) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	out, _, err := mgproc.Run(ctx, binary, w.config, args...)
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// addAccount connects the account as an operator scripts it: a refresh
// token in a file, checked against the (fake) Google.
func (w *world) addAccount() {
	w.t.Helper()
	f := filepath.Join(w.fakes.Dir, "refresh-token")
	if err := os.WriteFile(f, []byte(w.fakes.OAuth.IssueRefreshToken(account)+"\n"), 0o600); err != nil {
		w.t.Fatal(err)
	}
	out := w.mailgate("accounts", "add", account, "--refresh-token-file", f, "--import-recent", "0", "--kind", "gmail")
	if !strings.Contains(out, "Connected "+account) {
		w.t.Fatalf("accounts add %s said %q, want Connected", account, out)
	}
}

// serve starts `mailgate serve` and waits until it serves and has polled
// the mailbox once; its log is shown if the test fails, and it is killed
// at the end if still running.
func (w *world) serve() *mgproc.Process {
	w.t.Helper()
	w.serves++
	name := fmt.Sprintf("serve-%d", w.serves)
	p, err := mgproc.StartServe(binary, w.config, filepath.Join(w.fakes.Dir, name+".log"))
	if err != nil {
		w.t.Fatal(err)
	}
	t := w.root
	t.Cleanup(func() {
		if !p.Exited() {
			p.Kill()
		}
		if t.Failed() {
			t.Logf("---- %s log (pid %d) ----\n%s", name, p.Pid(), tail(p.Log(), 80))
		}
	})
	if err := p.WaitLog("mailgate serving", 15*time.Second); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// waitPolled waits until the account was polled after since.
func (w *world) waitPolled(since time.Time, timeout time.Duration) {
	w.t.Helper()
	w.eventually(timeout, "a poll of "+account, func() bool {
		a, err := w.acc.Get(w.ctx, account)
		return err == nil && a.LastPoll.After(since)
	})
}

// eventually polls cond every 50ms until it is true, or fails the test.
func (w *world) eventually(timeout time.Duration, what string, cond func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-w.ctx.Done():
			w.t.Fatalf("waiting for %s: %v", what, w.ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// read runs a read of Redis for the checks, retrying for a while: after a
// failover the test's own client, like mailgate's, needs a moment to find
// the new master (a cluster client learns the new layout only from a
// MOVED or a reload).
func (w *world) read(what string, f func(ctx context.Context) error) {
	w.t.Helper()
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		err = f(ctx)
		cancel()
		if err == nil {
			return
		}
		if cc, ok := w.rdb.(*redis.ClusterClient); ok {
			cc.ReloadState(w.ctx)
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.t.Fatalf("reading %s from Redis: %v", what, err)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines ...]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// phase runs f as a subtest of the world's test, with the world reporting
// to the subtest meanwhile; it reports whether the subtest passed.
func (w *world) phase(name string, f func(t *testing.T)) bool {
	parent := w.t
	defer func() { w.t = parent }()
	return parent.Run(name, func(t *testing.T) {
		w.t = t
		f(t)
	})
}

// counts returns how many tickets the store holds and how many messages
// Gmail and the smarthost accepted so far: cheap signs of progress.
func (w *world) counts() (tickets int64, delivered int) {
	ctx, cancel := context.WithTimeout(w.ctx, 2*time.Second)
	defer cancel()
	tickets, _ = w.rdb.ZCard(ctx, w.prefix+"tickets").Result()
	return tickets, len(w.fakes.GmailSMTP.Received()) + len(w.mx.Received())
}

// underWay waits until at least tickets tickets exist and delivered
// messages went out.
func (w *world) underWay(tickets int64, delivered int) {
	w.t.Helper()
	w.eventually(30*time.Second, fmt.Sprintf("%d tickets and %d deliveries", tickets, delivered), func() bool {
		tk, d := w.counts()
		return tk >= tickets && d >= delivered
	})
}
