package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/testcert"
	"github.com/mailgate/mailgate/tlsmode"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run mailgate end to end on this machine against a fake Gmail, fake Google OAuth and a fake recipient MX (no Google account needed)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "keep-running", Usage: "leave everything up after the scene, and print the addresses to try it by hand"},
		},
		Action: demo,
	}
}

// Demo accounts: a consumer Gmail account with a tiny quota, and a
// Workspace account on a domain mailgate holds a DKIM key for.
const (
	demoGmail     = "acme.helpdesk@gmail.com"
	demoWorkspace = "support@acme.example"
	demoDomain    = "acme.example"
	demoRewrite   = "helpdesk@acme.example"
)

// demoWorld is the fake Internet the demo runs against.
type demoWorld struct {
	dir      string
	redis    *miniredis.Miniredis // nil when a real Redis answered
	google   *fakeoauth.Server
	imap     *fakegmail.Server
	gmail    *fakesmtp.Server // Google's submission server
	mx       *fakesmtp.Server // every recipient's mail exchanger
	dkimKey  dkim.Key
	prefix   string
	mxPort   int
	imapAddr string
}

func (w *demoWorld) close() {
	for _, c := range []io.Closer{w.imap, w.gmail, w.mx} {
		if c != nil {
			c.Close()
		}
	}
	if w.google != nil {
		w.google.Close()
	}
	if w.redis != nil {
		w.redis.Close()
	}
	os.RemoveAll(w.dir)
}

// stubResolver sends every domain's mail to the fake MX on loopback.
type stubResolver struct{}

func (stubResolver) LookupMX(context.Context, string) ([]*net.MX, error) {
	return []*net.MX{{Host: "127.0.0.1.", Pref: 10}}, nil
}

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
	if w != nil {
		defer w.close()
	}
	if err != nil {
		return err
	}
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
func startDemoWorld(ctx context.Context, cfg *config.Config, n *narrator) (*demoWorld, error) {
	dir, err := os.MkdirTemp("", "mailgate-demo-")
	if err != nil {
		return nil, err
	}
	w := &demoWorld{dir: dir, prefix: "mailgate-demo-" + strconv.FormatInt(time.Now().Unix(), 36) + ":"}

	// Redis: the configured one if it answers, else an embedded one.
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	saved := cfg.Redis.DialTimeout
	cfg.Redis.DialTimeout = config.Duration(500 * time.Millisecond)
	rdb, err := openRedis(pctx, cfg)
	cancel()
	cfg.Redis.DialTimeout = saved
	if err == nil {
		rdb.Close()
		n.step("Redis at %s answers: using it (keys under %q, so your data is untouched)", redactURL(cfg.Redis.URL), w.prefix)
	} else {
		w.redis, err = miniredis.Run()
		if err != nil {
			return w, fmt.Errorf("embedded Redis: %w", err)
		}
		cfg.Redis.URL = "redis://" + w.redis.Addr() + "/0"
		n.step("no Redis at the configured URL: using an embedded in-memory Redis (miniredis) at %s — nothing is persisted; start redis-server to use a real one", w.redis.Addr())
	}
	cfg.Redis.Prefix = w.prefix

	w.google = fakeoauth.New()
	ca, err := testcert.New()
	if err != nil {
		return w, err
	}
	caFile, _, _, err := ca.WritePEM(dir)
	if err != nil {
		return w, err
	}
	w.imap, err = fakegmail.New(fakegmail.Options{Validate: w.google.Validate})
	if err != nil {
		return w, err
	}
	imapAddr, err := w.imap.Start()
	if err != nil {
		return w, err
	}
	w.imapAddr = imapAddr.String()
	if w.gmail, err = fakesmtp.NewGmail(fakesmtp.GmailOptions{TLS: ca.ServerTLS("smtp.gmail.com"), Validate: w.google.Validate}); err != nil {
		return w, err
	}
	if w.mx, err = fakesmtp.NewMX(fakesmtp.MXOptions{TLS: ca.ServerTLS("mx.example"), Hostname: "mx.customer.example"}); err != nil {
		return w, err
	}
	_, port, _ := net.SplitHostPort(w.mx.Addr())
	w.mxPort, _ = strconv.Atoi(port)

	key, err := dkim.Generate(dkim.AlgoRSA, 2048)
	if err != nil {
		return w, err
	}
	keyFile := filepath.Join(dir, "demo._domainkey."+demoDomain+".pem")
	if err := dkim.WriteKey(keyFile, key); err != nil {
		return w, err
	}
	w.dkimKey = dkim.Key{Domain: demoDomain, Selector: "demo", Signer: key}
	n.step("fake Google started: OAuth at %s, Gmail IMAP at %s, Gmail SMTP at %s; fake recipient MX at %s", w.google.URL, w.imapAddr, w.gmail.Addr(), w.mx.Addr())

	g := &cfg.Google
	g.ClientID, g.ClientSecret = fakeoauth.ClientID, fakeoauth.ClientSecret
	g.AuthURL, g.TokenURL, g.UserinfoURL = w.google.URL+"/auth", w.google.URL+"/token", w.google.UserinfoURL()
	g.IMAPAddr, g.IMAPTLS = w.imapAddr, tlsmode.Plain
	g.SMTPAddr, g.SMTPTLS = w.gmail.Addr(), tlsmode.StartTLS
	g.CAFile = caFile
	cfg.Secrets.KeyFile = filepath.Join(dir, "mailgate.key")
	cfg.Fetch.PollInterval = config.Duration(2 * time.Second)
	cfg.Fetch.LeaseTTL = config.Duration(5 * time.Second)
	cfg.Relay.Listen = "127.0.0.1:0"
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Relay.GmailDailyLimit = 3 // a tiny quota, to see it run out
	cfg.Relay.QuotaWarnAt = 0.6
	cfg.Relay.RewriteFromAddress = demoRewrite
	cfg.Relay.RetrySchedule = []config.Duration{config.Duration(time.Second)}
	cfg.DKIM.Keys = []config.DKIMKey{{Domain: demoDomain, Selector: "demo", Algorithm: config.DKIMRSA, PrivateKeyFile: keyFile}}
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
