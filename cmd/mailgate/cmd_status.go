package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "accounts, Gmail quota, relay queue and recent warnings, read from Redis (works while serve runs elsewhere)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "machine-readable JSON (the same as GET /status)"},
			&cli.DurationFlag{Name: "watch", Usage: "refresh every `INTERVAL` (e.g. 2s) until interrupted"},
		},
		Action: statusAction,
	}
}

func statusAction(c *cli.Context) error {
	cfg, acc, rdb, err := loadAccounts(c)
	if err != nil {
		return err
	}
	defer rdb.Close()
	q := smtprelay.NewQueue(rdb, smtprelay.QueueOptions{Prefix: cfg.Redis.Prefix})
	src := statusSources(cfg, rdb, acc, q, newTicketStore(rdb, cfg, acc, nil))
	for {
		st, err := src.Gather(c.Context)
		if err != nil {
			return err
		}
		if c.Duration("watch") > 0 && !c.Bool("json") {
			fmt.Fprint(c.App.Writer, "\033[H\033[2J") // clear the terminal
		}
		if c.Bool("json") {
			err = writeJSON(c.App.Writer, st)
		} else {
			err = printStatus(c.App.Writer, st)
			fmt.Fprintf(c.App.Writer, "\nkey file: %s\n", keyFileState(cfg.Secrets.KeyFile))
		}
		if err != nil || c.Duration("watch") <= 0 {
			return err
		}
		select {
		case <-c.Context.Done():
			return nil
		case <-time.After(c.Duration("watch")):
		}
	}
}

func printStatus(w io.Writer, st *status.Status) error {
	fmt.Fprintf(w, "mailgate status at %s\n\n", st.At.Local().Format("2006-01-02 15:04:05"))
	if len(st.Accounts) == 0 {
		fmt.Fprintln(w, "no accounts: connect one with `mailgate accounts connect EMAIL`")
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ACCOUNT\tSTATE\tLAST POLL\tIMPORTED\tGMAIL QUOTA (24 H)\tWARNING")
		for _, a := range st.Accounts {
			poll := "never"
			if !a.LastPoll.IsZero() {
				poll = ago(st.At, a.LastPoll)
			}
			imported := fmt.Sprint(a.Imported)
			if a.Quarantined > 0 {
				imported += fmt.Sprintf(" (%d quarantined)", a.Quarantined)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Email, a.State, poll, imported,
				quotaBar(a.Quota.Used, a.Quota.Limit, a.Quota.Blocked), clip(joinNotes(a.Throttled, a.Warning), 90))
		}
		tw.Flush()
	}
	if len(st.Fetchers) > 0 {
		fmt.Fprintln(w, "\nfetchers:")
		for _, f := range st.Fetchers {
			fmt.Fprintf(w, "  %s\n", f.Summary(st.At, len(st.Accounts)))
		}
	} else if len(st.Accounts) > 0 {
		fmt.Fprintln(w, "\nfetchers: none alive (no fetcher heartbeat in Redis: nothing polls the accounts)")
	}
	fmt.Fprintln(w)
	if st.Queue.Depth == 0 {
		fmt.Fprintln(w, "relay queue: empty")
	} else {
		fmt.Fprintf(w, "relay queue: %d messages, oldest %s (mailgate queue list)\n", st.Queue.Depth, ago(st.At, st.Queue.Oldest))
	}
	if st.Queue.Problem != "" {
		fmt.Fprintf(w, "relay delivery: STOPPED: %s\n", st.Queue.Problem)
	}
	if len(st.Warnings) > 0 {
		fmt.Fprintln(w, "\nrecent warnings:")
		for _, wn := range st.Warnings {
			fmt.Fprintf(w, "  %s  %-20s %s\n", wn.At.Local().Format("01-02 15:04"), wn.Type, clip(wn.Message, 110))
		}
	}
	return nil
}
