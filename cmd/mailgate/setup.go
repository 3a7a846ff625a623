package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/accounts"
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
	if err := cfg.Validate(); err != nil {
		return nil, cli.Exit(err, exitConfig)
	}
	slog.SetDefault(newLogger(cfg, os.Stderr))
	return cfg, nil
}

// newLogger builds the process logger from log.level and log.format.
func newLogger(cfg *config.Config, w *os.File) *slog.Logger {
	setLogLevel(cfg)
	opts := &slog.HandlerOptions{Level: &logLevel}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logLevel is the process's log level; a configuration reload (SIGHUP)
// changes it in place.
var logLevel slog.LevelVar

func setLogLevel(cfg *config.Config) {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level)) // validated by config
	logLevel.Set(lvl)
}

// redisLog sends go-redis's own messages (pool dial retries...) to the
// debug log instead of stderr: the error that reaches the user says it.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// openRedis connects as configured: Sentinel when redis.master_name is set,
// Cluster when redis.addrs lists seeds, else a single node.
func openRedis(ctx context.Context, cfg *config.Config) (redis.UniversalClient, error) {
	redis.SetLogger(redisLog{slog.Default()})
	rc := cfg.Redis
	var rdb redis.UniversalClient
	switch {
	case rc.MasterName != "":
		o, err := redis.ParseFailoverURL(addMaster(rc.URL, rc.MasterName))
		if err != nil {
			return nil, fmt.Errorf("redis.url: %w", err)
		}
		o.SentinelAddrs = append(o.SentinelAddrs, rc.Addrs...)
		o.DialTimeout = rc.DialTimeout.Duration()
		rdb = redis.NewFailoverClient(o)
	case len(rc.Addrs) > 0:
		o, err := redis.ParseClusterURL(rc.URL)
		if err != nil {
			return nil, fmt.Errorf("redis.url: %w", err)
		}
		o.Addrs = append(o.Addrs, rc.Addrs...)
		o.DialTimeout = rc.DialTimeout.Duration()
		rdb = redis.NewClusterClient(o)
	default:
		o, err := redis.ParseURL(rc.URL)
		if err != nil {
			return nil, fmt.Errorf("redis.url: %w", err)
		}
		o.DialTimeout = rc.DialTimeout.Duration()
		rdb = redis.NewClient(o)
	}
	pctx, cancel := context.WithTimeout(ctx, rc.DialTimeout.Duration()+time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis at %s does not answer (%v): start redis-server or set --redis-url / redis.url", redactURL(rc.URL), err)
	}
	return rdb, nil
}

func addMaster(u, master string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + "master_name=" + master
}

// redactURL hides a password in a Redis URL before it is printed.
func redactURL(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return u
	}
	return u[:scheme+3] + "****" + u[at:]
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

func newTicketStore(rdb redis.UniversalClient, cfg *config.Config, acc *accounts.Store, log *slog.Logger) *tickets.Store {
	return tickets.NewStore(rdb, tickets.Options{
		Prefix:           cfg.Redis.Prefix,
		MaxRawBytes:      cfg.Tickets.MaxRawBytes,
		StreamMaxLen:     cfg.Tickets.StreamMaxLen,
		SenderRateLimit:  cfg.Fetch.SenderRateLimit,
		SenderRateWindow: cfg.Fetch.SenderRateWindow.Duration(),
		SupportAddresses: acc.SupportAddresses,
		Logger:           log,
	})
}
