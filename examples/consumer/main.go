// Command consumer is a minimal helpdesk-side reader of mailgate's event
// stream: it joins a consumer group, handles each event, and acknowledges
// it only once handled, so a crash re-delivers what was not finished.
//
//	go run ./examples/consumer -redis redis://127.0.0.1:6379/0 -group helpdesk
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/tickets"
)

func main() {
	url := flag.String("redis", "redis://127.0.0.1:6379/0", "Redis URL")
	prefix := flag.String("prefix", "mailgate:", "mailgate's key prefix (redis.prefix)")
	group := flag.String("group", "helpdesk", "consumer group: one per helpdesk application")
	consumer := flag.String("consumer", "consumer-1", "this process's name within the group")
	from := flag.String("from", "0", "where a new group starts: 0 = every event ever, $ = only new ones")
	once := flag.Bool("once", false, "exit when no event is waiting instead of blocking")
	flag.Parse()

	opts, err := redis.ParseURL(*url)
	if err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := consume(ctx, rdb, *prefix+"events", *group, *consumer, *from, *once, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// consume reads the stream as the group's consumer until ctx ends (or, with
// once, until nothing is waiting), writing a line per event to out.
func consume(ctx context.Context, rdb *redis.Client, stream, group, consumer, from string, once bool, out io.Writer) error {
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
		if err == redis.Nil || (err == nil && len(res[0].Messages) == 0) {
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
