package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/internal/oneline"
	"github.com/mailgate/mailgate/smtprelay"
)

// showHeaderLines is how much of a queued message `queue show` prints:
// enough to recognise it without dumping a 25 MB attachment.
const showHeaderLines = 20

func queueCommand() *cli.Command {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "machine-readable JSON output"}
	return &cli.Command{
		Name:  "queue",
		Usage: "inspect and act on the relay's delivery queue",
		Subcommands: []*cli.Command{
			{
				Name:   "list",
				Usage:  "list the messages not yet delivered nor bounced, oldest first",
				Flags:  []cli.Flag{jsonFlag, &cli.Int64Flag{Name: "limit", Value: 200, Usage: "show at most `N` messages"}},
				Action: queueList,
			},
			{
				Name:      "show",
				Usage:     "show one message: envelope, delivery state and its first header lines",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{jsonFlag},
				Action:    queueShow,
			},
			{
				Name:      "retry",
				Usage:     "try a deferred message again now instead of at its next scheduled try",
				ArgsUsage: "ID",
				Action:    queueRetry,
			},
			{
				Name:      "delete",
				Usage:     "remove a message from the queue: it will be neither delivered nor bounced",
				ArgsUsage: "ID",
				Action:    queueDelete,
			},
		},
	}
}

// openQueue opens Redis and the relay queue under the configured prefix,
// the one `mailgate serve` uses.
func openQueue(c *cli.Context) (*smtprelay.Queue, redis.UniversalClient, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return nil, nil, err
	}
	rdb, err := openRedis(c.Context, cfg)
	if err != nil {
		return nil, nil, err
	}
	return smtprelay.NewQueue(rdb, smtprelay.QueueOptions{Prefix: cfg.Redis.Prefix}), rdb, nil
}

// queueListing is `queue list --json`: the depth and age a monitor wants,
// and the messages.
type queueListing struct {
	Queued   int64                `json:"queued"`
	Oldest   time.Time            `json:"oldest,omitzero"`
	Messages []*smtprelay.Message `json:"messages"`
}

func queueList(c *cli.Context) error {
	limit := c.Int64("limit")
	if limit <= 0 {
		return cli.Exit(fmt.Sprintf("--limit %d: want a positive number of messages", limit), 1)
	}
	q, rdb, err := openQueue(c)
	if err != nil {
		return err
	}
	defer rdb.Close()
	depth, oldest, err := q.Stats(c.Context)
	if err != nil {
		return err
	}
	list, err := q.List(c.Context, limit)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if list == nil {
			list = []*smtprelay.Message{}
		}
		return writeJSON(c.App.Writer, queueListing{Queued: depth, Oldest: oldest, Messages: list})
	}
	w := c.App.Writer
	if depth == 0 {
		fmt.Fprintln(w, "queue empty: every accepted message was delivered or bounced")
		return nil
	}
	now := time.Now()
	fmt.Fprintf(w, "%s queued, oldest %s ago", plural(depth, "message"), shortDuration(now.Sub(oldest)))
	if int64(len(list)) < depth {
		fmt.Fprintf(w, " (showing the oldest %d: --limit)", len(list))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tAGE\tATTEMPTS\tNEXT TRY\tROUTE\tFROM\tTO\tTICKET\tLAST ERROR")
	for _, m := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\n", m.ID, m.State, shortDuration(now.Sub(m.CreatedAt)),
			m.Attempts, nextTry(m, now), dash(m.Route.String()), clip(envelopeFrom(m.From), 40), len(m.Pending()), ticketRef(m.Ticket),
			clip(oneline.Of(m.LastError), 60))
	}
	return tw.Flush()
}

// queueShown is `queue show --json`: the message and its first header
// lines, when its content is still stored.
type queueShown struct {
	*smtprelay.Message
	ContentStored bool     `json:"content_stored"`
	Headers       []string `json:"headers,omitempty"`
}

func queueShow(c *cli.Context) error {
	args, err := flagsAfterArgs(c, queueUsage(c))
	if err != nil {
		return err
	}
	return withQueued(c, args, true, func(c *cli.Context, _ *smtprelay.Queue, _ string, m *smtprelay.Message) error {
		return printQueued(c, m, c.Bool("json"))
	})
}

// printQueued is the body of `queue show`: m in JSON or for people.
func printQueued(c *cli.Context, m *smtprelay.Message, asJSON bool) error {
	headers, more := headerLines(m.Data, showHeaderLines)
	if asJSON {
		return writeJSON(c.App.Writer, queueShown{Message: m, ContentStored: len(m.Data) > 0, Headers: headers})
	}
	now := time.Now()
	w := c.App.Writer
	fmt.Fprintf(w, "Queue id:     %s\n", m.ID)
	fmt.Fprintf(w, "State:        %s\n", describeState(m, now))
	fmt.Fprintf(w, "From:         %s\n", envelopeFrom(m.From))
	if p := m.Pending(); len(p) > 0 {
		fmt.Fprintf(w, "To:           %s\n", strings.Join(p, ", "))
	}
	if d := m.Delivered(); len(d) > 0 {
		fmt.Fprintf(w, "Delivered to: %s\n", strings.Join(d, ", "))
	}
	for _, r := range m.Rcpts {
		if r.State == smtprelay.RcptFailed {
			fmt.Fprintf(w, "Failed:       %s: %s\n", r.Addr, clip(oneline.Of(r.LastError), 100))
		}
	}
	if m.Account != "" {
		fmt.Fprintf(w, "Account:      %s (connected Gmail account)\n", m.Account)
	}
	if m.Ticket != 0 {
		fmt.Fprintf(w, "Ticket:       #%d\n", m.Ticket)
	}
	if m.MessageID != "" {
		fmt.Fprintf(w, "Message-ID:   %s\n", m.MessageID)
	}
	fmt.Fprintf(w, "Size:         %d bytes\n", m.Size)
	fmt.Fprintf(w, "Accepted:     %s (%s ago)\n", m.CreatedAt.Local().Format(time.RFC1123), shortDuration(now.Sub(m.CreatedAt)))
	fmt.Fprintf(w, "Attempts:     %d\n", m.Attempts)
	if m.Route != "" {
		fmt.Fprintf(w, "Last route:   %s\n", m.Route)
	}
	if m.LastError != "" {
		fmt.Fprintf(w, "Last error:   %s\n", oneline.Of(m.LastError))
	}
	if len(m.Data) == 0 {
		fmt.Fprintln(w, "\nThe message content is no longer stored (it is dropped once a message is sent or bounced).")
		return nil
	}
	fmt.Fprintf(w, "\nHeader (first %d lines):\n", showHeaderLines)
	for _, l := range headers {
		fmt.Fprintf(w, "  %s\n", l)
	}
	if more > 0 {
		fmt.Fprintf(w, "  … %s more\n", plural(int64(more), "header line"))
	}
	return nil
}

func queueRetry(c *cli.Context) error {
	return withQueued(c, c.Args().Slice(), false, retryQueued)
}

func retryQueued(c *cli.Context, q *smtprelay.Queue, id string, m *smtprelay.Message) error {
	switch m.State {
	case smtprelay.StateSent, smtprelay.StateBounced:
		return cli.Exit(fmt.Sprintf("%s was already %s: nothing to retry", id, m.State), 1)
	case smtprelay.StateQueued, smtprelay.StateSending:
		return cli.Exit(fmt.Sprintf("%s is not deferred: it is ready for, or in the hands of, a delivery worker; nothing to retry", id), 1)
	case smtprelay.StateTentative:
		return cli.Exit(fmt.Sprintf("%s was never confirmed to its client (it got 451 and sends it again): it is not delivered; nothing to retry", id), 1)
	}
	if err := q.RetryNow(c.Context, id); err != nil {
		// Its state changed since we read it (a worker promoted it).
		return cli.Exit(err, 1)
	}
	fmt.Fprintf(c.App.Writer, "%s is ready again: a running `mailgate serve` tries it now (attempt %d) instead of %s.\n",
		id, m.Attempts+1, nextTry(m, time.Now()))
	return nil
}

func queueDelete(c *cli.Context) error {
	return withQueued(c, c.Args().Slice(), true, deleteQueued)
}

func deleteQueued(c *cli.Context, q *smtprelay.Queue, id string, m *smtprelay.Message) error {
	if err := q.Delete(c.Context, id); errors.Is(err, smtprelay.ErrNotFound) {
		return cli.Exit(fmt.Sprintf("%s is gone already (delivered, bounced or deleted meanwhile)", id), 1)
	} else if err != nil {
		return err
	}
	w := c.App.Writer
	what := fmt.Sprintf("from %s to %s", envelopeFrom(m.From), plural(int64(len(m.To)), "recipient"))
	if s := subject(m.Data); s != "" {
		what += fmt.Sprintf(", subject %q", s)
	}
	if m.Ticket != 0 {
		what += fmt.Sprintf(", ticket #%d", m.Ticket)
	}
	if m.State == smtprelay.StateSent || m.State == smtprelay.StateBounced {
		fmt.Fprintf(w, "Deleted the record of %s (%s; it was already %s).\n", id, what, m.State)
		return nil
	}
	tried := "never tried"
	if m.Attempts > 0 {
		tried = plural(int64(m.Attempts), "failed attempt")
	}
	fmt.Fprintf(w, "Deleted %s (%s; %s, %s).\n", id, what, m.State, tried)
	fmt.Fprintln(w, "It will be neither delivered nor bounced: its sender is not told. A try already under way may still complete.")
	return nil
}

func queueUsage(c *cli.Context) string {
	return fmt.Sprintf("usage: mailgate queue %s ID (the id shown by `mailgate queue list`)", c.Command.Name)
}

func queueIDArg(c *cli.Context, args []string) (string, error) {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return "", cli.Exit(queueUsage(c), 1)
	}
	return strings.TrimSpace(args[0]), nil
}

// withQueued serves the commands on one queued message (show, retry,
// delete): it takes the ID from args, opens the queue, reads the message
// (withData: its content too) and runs fn with them, closing Redis after.
func withQueued(c *cli.Context, args []string, withData bool, fn func(c *cli.Context, q *smtprelay.Queue, id string, m *smtprelay.Message) error) error {
	id, err := queueIDArg(c, args)
	if err != nil {
		return err
	}
	q, rdb, err := openQueue(c)
	if err != nil {
		return err
	}
	defer rdb.Close()
	m, err := getQueued(c.Context, q, id, withData)
	if err != nil {
		return err
	}
	return fn(c, q, id, m)
}

func getQueued(ctx context.Context, q *smtprelay.Queue, id string, withData bool) (*smtprelay.Message, error) {
	m, err := q.Get(ctx, id, withData)
	if errors.Is(err, smtprelay.ErrNotFound) {
		return nil, cli.Exit(fmt.Sprintf("no queued message %s (see `mailgate queue list`; records of sent and bounced messages are kept 7 days)", id), 1)
	}
	return m, err
}

// headerLines returns the first n lines of the message's header section
// (folded lines count one each) and how many more it holds.
func headerLines(data []byte, n int) (lines []string, more int) {
	if len(data) == 0 {
		return nil, 0
	}
	for l := range strings.Lines(string(data)) {
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		if len(lines) < n {
			lines = append(lines, clip(l, 200))
		} else {
			more++
		}
	}
	return lines, more
}

// subject returns the message's decoded Subject, or "".
func subject(data []byte) string {
	if len(data) == 0 {
		return ""
	}
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return ""
	}
	s := msg.Header.Get("Subject")
	if dec, err := new(mime.WordDecoder).DecodeHeader(s); err == nil {
		s = dec
	}
	return clip(oneline.Of(s), 80)
}

func describeState(m *smtprelay.Message, now time.Time) string {
	switch m.State {
	case smtprelay.StateDeferred:
		return fmt.Sprintf("deferred, next try %s (%s)", nextTry(m, now), m.NextAttempt.Local().Format(time.RFC1123))
	case smtprelay.StateQueued:
		return "queued, ready for the next free delivery worker"
	case smtprelay.StateSending:
		return fmt.Sprintf("sending: attempt %d by delivery worker %s, for %s", m.Attempts, m.Consumer, shortDuration(now.Sub(m.TryStarted)))
	case smtprelay.StateTentative:
		return "tentative: received, but its client was not told 250 (yet); never delivered, dropped once its accept time is over"
	case smtprelay.StateSent:
		return "sent"
	case smtprelay.StateBounced:
		return "bounced (a delivery status notification went to the sender)"
	}
	return m.State
}

func nextTry(m *smtprelay.Message, now time.Time) string {
	switch {
	case m.State == smtprelay.StateQueued || m.State == smtprelay.StateSending:
		return "now"
	case m.NextAttempt.IsZero():
		return "-"
	case m.NextAttempt.After(now):
		return "in " + shortDuration(m.NextAttempt.Sub(now))
	}
	return "due"
}
