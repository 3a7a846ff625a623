package main

import (
	"context"
	"errors"
	"log/slog"
	"net/smtp"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/internal/redistest"
)

// runningDaemon is `serve` running in the test process, logging to logs.
type runningDaemon struct {
	d    *daemon
	logs *syncBuffer
	stop context.CancelFunc // what SIGTERM does
	done chan error         // run's result
}

// startDaemon runs the daemon on e's Redis and fake Google, with extra
// key=value settings, on free loopback ports.
func startDaemon(t *testing.T, e *accountsEnv, sets ...string) *runningDaemon {
	t.Helper()
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	var kvs []string
	for i := 1; i < len(e.global); i += 2 {
		switch e.global[i] {
		case "--redis-url":
			kvs = append(kvs, "redis.url="+e.global[i+1])
		case "--set":
			kvs = append(kvs, e.global[i+1])
		}
	}
	kvs = append(kvs, "relay.listen=127.0.0.1:0", "http.listen=127.0.0.1:0", "shutdown_grace=3s")
	for _, kv := range append(kvs, sets...) {
		k, v, _ := strings.Cut(kv, "=")
		if err := cfg.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := &runningDaemon{logs: &syncBuffer{}, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(r.logs, nil))
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	if r.d, err = newDaemon(ctx, cfg, log, daemonOptions{}); err != nil {
		stop()
		t.Fatal(err)
	}
	go func() { r.done <- r.d.run(ctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("the daemon did not stop")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.logs.String(), "mailgate serving") {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not start:\n%s", r.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

// wait returns run's result, failing the test if it takes longer than
// within.
func (r *runningDaemon) wait(t *testing.T, within time.Duration) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err, time.Since(start)
	case <-time.After(within):
		t.Fatalf("the daemon still runs after %s; log:\n%s", within, r.logs)
		return nil, 0
	}
}

// TestDaemonStopsWholeWhenAPartFails: the SMTP listener closed under the
// running daemon ends its SMTP part. The fetcher, the delivery workers and
// HTTP must stop too, within shutdown_grace, and serve must exit non-zero
// naming the part, so that systemd restarts the whole daemon instead of
// leaving it up without a relay.
func TestDaemonStopsWholeWhenAPartFails(t *testing.T) {
	e := newAccountsEnv(t)
	r := startDaemon(t, e)
	r.d.relayL.Close()

	err, took := r.wait(t, 3*time.Second+stopMargin+2*time.Second)
	var pe *partError
	if !errors.As(err, &pe) || pe.part != "smtp" || !strings.Contains(err.Error(), "closed network connection") {
		t.Fatalf("run = %v, want the smtp part named with its error", err)
	}
	logs := r.logs.String()
	if !strings.Contains(logs, "a part stopped; stopping the others") || strings.Contains(logs, "parts not stopped") {
		t.Errorf("log:\n%s\nwant the failure logged and every other part stopped", logs)
	}
	t.Logf("stopped whole %s after the listener closed", took.Round(time.Millisecond))

	// What the operator and systemd see: a message naming the part, and a
	// non-zero status.
	var stderr syncBuffer
	app := &cli.App{Name: "mailgate", ExitErrHandler: func(*cli.Context, error) {}, Action: func(*cli.Context) error { return err }}
	if code := runApp(app, []string{"mailgate"}, &stderr); code == 0 || !strings.Contains(stderr.String(), "mailgate: smtp stopped: ") {
		t.Errorf("serve's exit: status %d, stderr %q; want non-zero and the part named", code, stderr.String())
	}
}

// TestDaemonSignalStopsClean: a stop asked for (SIGTERM) is no failure:
// run returns nil, and serve exits 0.
func TestDaemonSignalStopsClean(t *testing.T) {
	e := newAccountsEnv(t)
	r := startDaemon(t, e)
	r.stop()
	if err, _ := r.wait(t, 3*time.Second+stopMargin+2*time.Second); err != nil {
		t.Fatalf("run after a stop = %v, want nil\n%s", err, r.logs)
	}
}

// TestRedisOutageLogsOnceEachWay kills Redis for a few seconds under a
// running daemon with a connected account, and brings it back with its
// data: each part that uses Redis says once that it is unreachable and
// once that it is back, instead of a line per retry.
func TestRedisOutageLogsOnceEachWay(t *testing.T) {
	e := newAccountsEnv(t, "appendonly yes", "appendfsync always")
	gm, err := fakegmail.New(fakegmail.Options{Validate: e.google.Validate})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := gm.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gm.Close() })
	const acct = "support@acme.test"
	gm.AddUser(acct)
	e.global = append(e.global, "--set", "google.imap_addr="+addr.String(), "--set", "google.imap_tls=plain")
	e.addAccount(acct, 0)
	r := startDaemon(t, e, "fetch.lease_ttl=3s", "redis.dial_timeout=1s",
		"secrets.key_file="+filepath.Join(e.dir, "key"))
	acc := e.store()
	eventually(t, 10*time.Second, "the account's first poll", func() bool {
		a, err := acc.Get(context.Background(), acct)
		return err == nil && !a.LastPoll.IsZero()
	})

	relay := r.d.relayL.Addr().String()
	e.redis.Kill()
	if err := mailFrom(relay, acct); err == nil || !strings.Contains(err.Error(), "451") {
		t.Errorf("MAIL FROM with Redis down: %v, want 451", err)
	}
	time.Sleep(4 * time.Second) // longer than the lease: the fetcher loses it
	if err := e.redis.Restart(); err != nil {
		t.Fatal(err)
	}
	parts := []string{"relay delivery", "relay housekeeping", "imapfetch", "relay smtp"}
	eventually(t, 15*time.Second, "every part to see Redis back", func() bool {
		if err := mailFrom(relay, acct); err != nil {
			return false
		}
		for _, p := range parts {
			if !strings.Contains(r.logs.String(), p+": redis back after") {
				return false
			}
		}
		return true
	})
	r.stop()
	r.wait(t, 10*time.Second)

	logs := r.logs.String()
	for _, p := range parts {
		down := regexp.MustCompile(regexp.QuoteMeta(p)+`: redis unreachable; [^"]+`).FindAllString(logs, -1)
		back := regexp.MustCompile(regexp.QuoteMeta(p)+`: redis back after [^"]+`).FindAllString(logs, -1)
		if len(down) != 1 || len(back) != 1 {
			t.Errorf("%s: %d unreachable and %d back lines, want 1 each:\n%s", p, len(down), len(back), logs)
			continue
		}
		t.Logf("%s | %s", down[0], back[0])
	}
	for _, noise := range []string{"relay: reading the queue", "relay: support addresses unavailable", "imapfetch: renew lease", "imapfetch: acquire lease"} {
		if n := strings.Count(logs, `msg="`+noise); n > 0 {
			t.Errorf("%d lines %q: one per retry, the noise the outage lines replace:\n%s", n, noise, logs)
		}
	}
}

// mailFrom opens an SMTP session to the relay and gives MAIL FROM.
func mailFrom(addr, from string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail(from); err != nil {
		return err
	}
	return c.Quit()
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStartupLineUnderSentinel: under Sentinel the startup line names the
// sentinels and the master, which the daemon really uses, not redis.url's
// default host, which it does not contact.
func TestStartupLineUnderSentinel(t *testing.T) {
	e := newAccountsEnv(t)
	sentinel := redistest.WatchMaster(t, e.redis, "helpdesk")
	r := startDaemon(t, e, "redis.url=redis://127.0.0.1:6379/0", "redis.master_name=helpdesk", "redis.addrs="+sentinel.Addr)
	line := regexp.MustCompile(`msg="mailgate serving".*`).FindString(r.logs.String())
	want := `redis="master \"helpdesk\" via sentinels ` + sentinel.Addr + `"`
	if !strings.Contains(line, want) || strings.Contains(line, "redis://") {
		t.Errorf("startup line %q\nwant %s and no trace of the unused default URL", line, want)
	}
}
