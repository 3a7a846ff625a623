package main

import (
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:   "serve",
		Usage:  "run the daemon: fetch every connected account (IDLE + polling) until SIGINT/SIGTERM",
		Action: serve,
	}
}

func serve(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.Default()
	acc, rdb, err := openAccounts(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st := newTicketStore(rdb, cfg, acc, log)
	f, err := newFetcher(cfg, acc, st, log)
	if err != nil {
		return err
	}
	log.Info("mailgate serving", "redis", redactURL(cfg.Redis.URL), "imap", cfg.Google.IMAPAddr)
	// Run returns once ctx ends and in-flight ingests have finished.
	err = f.Run(ctx)
	if ctx.Err() != nil {
		log.Info("mailgate stopped")
		return nil
	}
	return err
}
