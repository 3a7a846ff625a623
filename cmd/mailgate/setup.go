package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/tickets"
)

// exitConfig is the exit code for a configuration that does not load.
const exitConfig = 2

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "YAML configuration `FILE` (defaults apply without one)", EnvVars: []string{"MAILGATE_CONFIG"}},
		&cli.StringFlag{Name: "redis-url", Usage: "Redis `URL` (redis.url), e.g. redis://127.0.0.1:6379/0"},
		&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error (log.level)"},
		&cli.StringFlag{Name: "log-format", Usage: "text or json (log.format)"},
		&cli.StringSliceFlag{Name: "set", Usage: "override any key, e.g. --set relay.listen=127.0.0.1:2600 (repeatable)"},
	}
}

// loadConfig reads the file, then MAILGATE_* variables, then flags: the
// later wins. A bad configuration exits with code 2 and names the key.
func loadConfig(c *cli.Context) (*config.Config, error) {
	cfg, err := config.Load(c.String("config"), os.Environ())
	if err != nil {
		return nil, cli.Exit(err, exitConfig)
	}
	overrides := map[string]string{
		"redis.url":  c.String("redis-url"),
		"log.level":  c.String("log-level"),
		"log.format": c.String("log-format"),
	}
	for _, kv := range c.StringSlice("set") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, cli.Exit(fmt.Errorf("--set %q: want key=value", kv), exitConfig)
		}
		if err := cfg.Set(k, v); err != nil {
			return nil, cli.Exit(err, exitConfig)
		}
	}
	for k, v := range overrides {
		if v == "" {
			continue
		}
		if err := cfg.Set(k, v); err != nil {
			return nil, cli.Exit(err, exitConfig)
		}
	}
	// Paths given by flags, too, are taken from the configuration
	// file's directory.
	cfg.ResolvePaths(c.String("config"), os.Environ())
	if err := cfg.Validate(); err != nil {
		return nil, cli.Exit(err, exitConfig)
	}
	slog.SetDefault(newLogger(cfg, os.Stderr))
	return cfg, nil
}

// openStore loads the configuration and opens Redis and the ticket store,
// whose support addresses are the connected accounts plus
// tickets.support_addresses; the store logs to stderr.
func openStore(c *cli.Context) (*tickets.Store, redis.UniversalClient, error) {
	cfg, acc, rdb, err := loadAccounts(c)
	if err != nil {
		return nil, nil, err
	}
	return newTicketStore(rdb, cfg, acc, newLogger(cfg, os.Stderr)), rdb, nil
}
