//go:build demo

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/internal/fakeworld"
)

// Demo accounts: a consumer Gmail account with a tiny quota, and a
// Workspace account on a domain mailgate holds a DKIM key for.
const (
	demoGmail     = "acme.helpdesk@gmail.com"
	demoWorkspace = "support@acme.example"
	demoDomain    = fakeworld.DKIMDomain
	demoRewrite   = "helpdesk@acme.example"
)

func demo(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	n := &narrator{w: c.App.Writer, start: time.Now()}
	n.title("mailgate demo: Gmail mailboxes in, helpdesk tickets out, notifications relayed")

	w, err := startDemoWorld(ctx, cfg, n)
	if err != nil {
		return err
	}
	defer w.Close()
	// The daemon logs only errors here; the narration says what happens.
	lvl := slog.LevelError
	if c.String("log-level") != "" {
		_ = lvl.UnmarshalText([]byte(c.String("log-level")))
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(log)

	sc, err := newScene(ctx, cfg, w, n, log)
	if err != nil {
		return err
	}
	runCtx, stopDaemon := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sc.d.run(runCtx) }()
	sceneErr := sc.play(ctx)
	if sceneErr == nil {
		sc.summary()
	}
	if sceneErr == nil && c.Bool("keep-running") {
		sc.printAddresses(cfg)
		<-ctx.Done()
	}
	stopDaemon()
	if err := <-done; err != nil && sceneErr == nil {
		sceneErr = err
	}
	if sceneErr != nil {
		return fmt.Errorf("demo: %w", sceneErr)
	}
	n.say("done in %s: everything above ran for real — IMAP, SMTP, OAuth, Redis, DKIM — against in-process fakes of Google and of the recipients' servers", time.Since(n.start).Round(100*time.Millisecond))
	return nil
}

// startDemoWorld starts the fakes and points cfg at them.
func startDemoWorld(ctx context.Context, cfg *config.Config, n *narrator) (*fakeworld.World, error) {
	prefix := "mailgate-demo-" + strconv.FormatInt(time.Now().Unix(), 36) + ":"

	// Redis: the configured one if it answers, else an embedded one.
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	saved := cfg.Redis.DialTimeout
	cfg.Redis.DialTimeout = config.Duration(500 * time.Millisecond)
	rdb, err := openRedis(pctx, cfg)
	cancel()
	cfg.Redis.DialTimeout = saved
	if err == nil {
		rdb.Close()
	}
	// RSA, the key type every receiver verifies, for the signature the
	// scene checks.
	w, werr := fakeworld.Start(fakeworld.Options{DKIMAlgorithm: dkim.AlgoRSA, DKIMSelector: "demo", Redis: err != nil})
	if werr != nil {
		return nil, werr
	}
	if err == nil {
		n.step("Redis at %s answers: using it (keys under %q, so your data is untouched)", redisWhere(cfg), prefix)
	} else {
		n.step("no Redis at the configured URL: using an embedded in-memory Redis (miniredis) at %s — nothing is persisted; start redis-server to use a real one", w.Redis.Addr())
	}
	w.Configure(cfg)
	cfg.Redis.Prefix = prefix
	n.step("fake Google started: OAuth at %s, Gmail IMAP at %s, Gmail SMTP at %s; fake recipient MX at %s", w.OAuth.URL, w.IMAPAddr, w.GmailSMTP.Addr(), w.MX.Addr())

	cfg.Fetch.PollInterval = config.Duration(2 * time.Second)
	cfg.Fetch.LeaseTTL = config.Duration(5 * time.Second)
	cfg.Relay.Listen = "127.0.0.1:0"
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Relay.GmailDailyLimit = 3 // a tiny quota, to see it run out
	cfg.Relay.QuotaWarnAt = 0.6
	cfg.Relay.RewriteFromAddress = demoRewrite
	cfg.Relay.RetrySchedule = []config.Duration{config.Duration(time.Second)}
	return w, nil
}

// narrator prints the scene as it happens.
type narrator struct {
	w     io.Writer
	start time.Time
}

func (n *narrator) title(s string) { fmt.Fprintf(n.w, "\n== %s ==\n\n", s) }

func (n *narrator) step(format string, args ...any) {
	fmt.Fprintf(n.w, "[%5.1fs] %s\n", time.Since(n.start).Seconds(), fmt.Sprintf(format, args...))
}

func (n *narrator) say(format string, args ...any) {
	fmt.Fprintf(n.w, "        %s\n", fmt.Sprintf(format, args...))
}

// waitFor polls cond until it is true or the time is up.
func waitFor(ctx context.Context, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func printTable(w io.Writer, header string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "        "+strings.ReplaceAll(header, "|", "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, "        "+strings.Join(r, "\t"))
	}
	tw.Flush()
}
