package main

import (
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/config"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:   "serve",
		Usage:  "run the daemon: fetch every connected account, and relay the helpdesk's mail, until SIGINT/SIGTERM (SIGHUP reloads the log level and relay access)",
		Action: serve,
	}
}

func serve(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	if err := checkFiles(cfg); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.Default()
	d, err := newDaemon(ctx, cfg, log, daemonOptions{reload: func() (*config.Config, error) { return loadConfig(c) }})
	if err != nil {
		return err
	}
	if err := d.run(ctx); err != nil {
		return err
	}
	log.Info("mailgate stopped")
	return nil
}
