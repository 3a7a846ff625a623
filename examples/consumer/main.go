// Command consumer is a minimal helpdesk-side reader of mailgate's event
// stream: it joins a consumer group, handles each event, and acknowledges
// it only once handled, so a crash re-delivers what was not finished.
//
// It connects to Redis as mailgate does (package redisconn), from the same
// settings under the same environment variables as mailgate's
// configuration: MAILGATE_REDIS_URL, MAILGATE_REDIS_ADDRS (comma-separated:
// the Cluster's seed nodes, or the sentinels), MAILGATE_REDIS_MASTER_NAME
// (Sentinel) and MAILGATE_REDIS_PREFIX. Flags override them:
//
//	go run ./examples/consumer -redis-url redis://127.0.0.1:6379/0 -group helpdesk
//	go run ./examples/consumer -redis-addrs 10.0.0.1:7000,10.0.0.2:7000 -group helpdesk      # Cluster
//	go run ./examples/consumer -redis-addrs 10.0.0.1:26379 -redis-master-name mymaster      # Sentinel
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/redisconn"
	"github.com/mailgate/mailgate/tickets"
)

func main() {
	a, err := parseArgs(os.Args[1:])
	if err != nil {
		os.Exit(2) // the flag package said why, with the usage
	}
	rdb, err := redisconn.New(a.redis)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := consume(ctx, rdb, eventsKey(rdb, a.prefix), a.group, a.consumer, a.from, a.once, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// args are the command line, over the MAILGATE_REDIS_* variables.
type args struct {
	redis                         redisconn.Options
	prefix, group, consumer, from string
	once                          bool
}

func parseArgs(argv []string) (args, error) {
	var a args
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	fs.StringVar(&a.redis.URL, "redis-url", env("redis.url", redisconn.DefaultURL), "Redis URL, as mailgate's redis.url (with -redis-addrs: only its password, database and TLS count)")
	fs.StringVar(&a.redis.URL, "redis", env("redis.url", redisconn.DefaultURL), "same as -redis-url")
	addrs := fs.String("redis-addrs", env("redis.addrs", ""), "comma-separated Cluster seed nodes, or the sentinels with -redis-master-name (redis.addrs)")
	fs.StringVar(&a.redis.MasterName, "redis-master-name", env("redis.master_name", ""), "Sentinel master name (redis.master_name)")
	fs.StringVar(&a.prefix, "prefix", env("redis.prefix", "mailgate:"), "mailgate's key prefix (redis.prefix)")
	fs.StringVar(&a.group, "group", "helpdesk", "consumer group: one per helpdesk application")
	fs.StringVar(&a.consumer, "consumer", "consumer-1", "this process's name within the group")
	fs.StringVar(&a.from, "from", "0", "where a new group starts: 0 = every event ever, $ = only new ones")
	fs.BoolVar(&a.once, "once", false, "exit when no event is waiting instead of blocking")
	if err := fs.Parse(argv); err != nil {
		return a, err
	}
	for _, addr := range strings.Split(*addrs, ",") {
		if addr = strings.TrimSpace(addr); addr != "" {
			a.redis.Addrs = append(a.redis.Addrs, addr)
		}
	}
	return a, nil
}

// env returns the MAILGATE_ variable mailgate reads for key, or def.
func env(key, def string) string {
	if v := os.Getenv(config.EnvVar(key)); v != "" {
		return v
	}
	return def
}

// eventsKey is the stream's key as mailgate names it. On a Cluster the
// prefix becomes a hash tag ("mailgate:" is "{mailgate}:"): every mailgate
// key, the stream included, lives in one slot.
func eventsKey(rdb redis.UniversalClient, prefix string) string {
	return tickets.NewStore(rdb, tickets.Options{Prefix: prefix}).Key("events")
}

// consume reads the stream as the group's consumer until ctx ends (or, with
// once, until nothing is waiting), writing a line per event to out.
func consume(ctx context.Context, rdb redis.UniversalClient, stream, group, consumer, from string, once bool, out io.Writer) error {
	err := rdb.XGroupCreateMkStream(ctx, stream, group, from).Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create group: %w", err)
	}

	// First re-read what this consumer received but never acknowledged
	// (ID "0"), then wait for new events (ID ">").
	next := "0"
	for ctx.Err() == nil {
		block := 5 * time.Second
		if once {
			block = -1 // XREADGROUP without BLOCK
		}
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: group, Consumer: consumer, Streams: []string{stream, next}, Count: 100, Block: block,
		}).Result()
		if errors.Is(err, redis.Nil) || (err == nil && len(res[0].Messages) == 0) {
			if next == "0" {
				next = ">"
				continue
			}
			if once {
				return nil
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Printf("read: %v (retrying)", err)
			time.Sleep(time.Second)
			continue
		}
		for _, m := range res[0].Messages {
			if err := handle(m, out); err != nil {
				log.Printf("event %s: %v (left pending, will be retried)", m.ID, err)
				continue
			}
			rdb.XAck(ctx, stream, group, m.ID)
		}
	}
	return nil
}

// handle is where a helpdesk creates its ticket or adds the comment.
func handle(m redis.XMessage, out io.Writer) error {
	typ, _ := m.Values["type"].(string)
	data, _ := m.Values["data"].(string)
	switch tickets.EventType(typ) {
	case tickets.EventTicketCreated:
		var t struct {
			ID               int64  `json:"id"`
			Subject          string `json:"subject"`
			SuppressTriggers bool   `json:"suppress_triggers"`
			Requester        struct {
				Email string `json:"email"`
			} `json:"requester"`
		}
		if err := json.Unmarshal([]byte(data), &t); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s new ticket #%d from %s: %q (triggers suppressed: %v)\n", m.ID, t.ID, t.Requester.Email, t.Subject, t.SuppressTriggers)
	case tickets.EventTicketComment:
		var c struct {
			Ticket     int64  `json:"ticket"`
			Index      int64  `json:"index"`
			ThreadedBy string `json:"threaded_by"`
			Author     struct {
				Email string `json:"email"`
			} `json:"author"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s comment %d on #%d from %s (threaded by %s)\n", m.ID, c.Index, c.Ticket, c.Author.Email, c.ThreadedBy)
	default:
		// Newer mailgate versions add event types; skip, don't fail.
		fmt.Fprintf(out, "%s %s (ignored)\n", m.ID, typ)
	}
	return nil
}
