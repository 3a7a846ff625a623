package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/tickets"
)

func ticketsCommand() *cli.Command {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "machine-readable JSON output"}
	return &cli.Command{
		Name:  "tickets",
		Usage: "list, show and ingest tickets",
		Subcommands: []*cli.Command{
			{
				Name:   "list",
				Usage:  "list tickets, newest first",
				Flags:  []cli.Flag{jsonFlag, &cli.Int64Flag{Name: "limit", Value: 50, Usage: "at most `N` tickets"}, &cli.Int64Flag{Name: "before", Usage: "only tickets older than `ID` (paging)"}},
				Action: ticketsList,
			},
			{
				Name:      "show",
				Usage:     "show one ticket with its comments",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{jsonFlag},
				Action:    ticketsShow,
			},
			{
				Name:      "ingest",
				Usage:     "feed .eml files (or folders of them) through the ticket store, as if they had been fetched",
				ArgsUsage: "FILE|DIR...",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "support-address", Usage: "the support `ADDRESS` the mail arrived at (default: from its recipients)"},
					&cli.BoolFlag{Name: "suppress-triggers", Usage: "mark new tickets so helpdesk automations do not fire"},
					&cli.BoolFlag{Name: "sender-rate-limit", Usage: "apply fetch.sender_rate_limit as fetching does (off: a folder of one customer's mail is not a loop)"},
				},
				Action: ticketsIngest,
			},
		},
	}
}

func ticketsList(c *cli.Context) error {
	st, rdb, err := openStore(c)
	if err != nil {
		return err
	}
	defer rdb.Close()
	ts, err := st.List(c.Context, tickets.ListOptions{Limit: c.Int64("limit"), BeforeID: c.Int64("before")})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, ts)
	}
	if len(ts) == 0 {
		fmt.Fprintln(c.App.Writer, "no tickets")
		return nil
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tUPDATED\tREQUESTER\tCOMMENTS\tSUBJECT\tTAGS")
	for _, t := range ts {
		fmt.Fprintf(tw, "#%d\t%s\t%s\t%s\t%d\t%s\t%s\n", t.ID, t.Status, t.UpdatedAt.Local().Format("2006-01-02 15:04"),
			clip(t.Requester.Email, 32), t.CommentCount, clip(t.Subject, 48), tagList(t))
	}
	return tw.Flush()
}

func ticketsShow(c *cli.Context) error {
	const usage = "usage: mailgate tickets show ID (a ticket number such as 42 or #42)"
	args, err := flagsAfterArgs(c, usage)
	if err != nil {
		return err
	}
	var id int64
	if len(args) == 1 {
		id, err = strconv.ParseInt(strings.TrimPrefix(args[0], "#"), 10, 64)
	}
	if len(args) != 1 || err != nil {
		return cli.Exit(usage, 1)
	}
	st, rdb, err := openStore(c)
	if err != nil {
		return err
	}
	defer rdb.Close()
	t, err := st.Get(c.Context, id)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, t)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "Ticket #%d  %s\n", t.ID, t.Subject)
	fmt.Fprintf(w, "  status:     %s\n  requester:  %s\n  support:    %s\n", t.Status, addr(t.Requester), t.SupportAddress)
	if len(t.CC) > 0 {
		var cc []string
		for _, a := range t.CC {
			cc = append(cc, addr(a))
		}
		fmt.Fprintf(w, "  cc:         %s\n", strings.Join(cc, ", "))
	}
	fmt.Fprintf(w, "  created:    %s\n  updated:    %s\n", t.CreatedAt.Local().Format(time.RFC1123), t.UpdatedAt.Local().Format(time.RFC1123))
	if tags := tagList(t); tags != "" {
		fmt.Fprintf(w, "  tags:       %s\n", tags)
	}
	if t.RelatedTicket != 0 {
		fmt.Fprintf(w, "  related:    #%d (%s)\n", t.RelatedTicket, t.RelatedReason)
	}
	for _, cm := range t.Comments {
		how := ""
		if cm.ThreadedBy != "" {
			how = " (threaded by " + cm.ThreadedBy + ")"
		}
		who := addr(cm.Author)
		if cm.Role != "" {
			who += " (" + cm.Role + ", from the Sent folder)"
		}
		fmt.Fprintf(w, "\n--- comment %d from %s, %s%s\n", cm.Index, who, cm.Date.Local().Format(time.RFC1123), how)
		fmt.Fprintln(w, strings.TrimRight(cm.Text, "\r\n "))
		for _, a := range cm.Attachments {
			kind := "attachment"
			if a.Inline {
				kind = "inline"
			}
			fmt.Fprintf(w, "  [%s] %s (%s, %d bytes, sha256 %s)\n", kind, a.Filename, a.ContentType, a.Size, a.SHA256[:12])
		}
		for _, p := range cm.Problems {
			fmt.Fprintf(w, "  [problem] %s\n", p)
		}
	}
	return nil
}

func ticketsIngest(c *cli.Context) error {
	if c.NArg() == 0 {
		return cli.Exit("usage: mailgate tickets ingest FILE|DIR... (RFC 5322 .eml files)", 1)
	}
	files, err := emlFiles(c.Args().Slice())
	if err != nil {
		return err
	}
	cfg, acc, rdb, err := loadAccounts(c)
	if err != nil {
		return err
	}
	defer rdb.Close()
	// The per-sender rate limit stops a mail loop while fetching; an admin
	// feeding a folder chose those mails, often many from one customer.
	if !c.Bool("sender-rate-limit") {
		cfg.Fetch.SenderRateLimit = 0
	}
	st := newTicketStore(rdb, cfg, acc, newLogger(cfg, os.Stderr))
	src := tickets.Source{Origin: "cli", SupportAddress: c.String("support-address"), SuppressTriggers: c.Bool("suppress-triggers")}
	var created, comments, dups, suppressed, failed int
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(c.App.ErrWriter, "%s: %v\n", f, err)
			failed++
			continue
		}
		r, err := st.Ingest(c.Context, raw, src)
		switch {
		case err != nil:
			fmt.Fprintf(c.App.ErrWriter, "%s: %v\n", f, err)
			failed++
		case r.Suppressed != "":
			about := ""
			if r.Ticket != 0 {
				about = fmt.Sprintf(" about ticket #%d", r.Ticket)
			}
			hint := ""
			if r.Suppressed == tickets.NoiseRateLimited {
				hint = "; ingest without --sender-rate-limit to take them all"
			}
			fmt.Fprintf(c.App.Writer, "%s: no ticket: %s%s (kept, reported on the event stream%s)\n", f, r.Suppressed, about, hint)
			suppressed++
		case r.Duplicate:
			fmt.Fprintf(c.App.Writer, "%s: already ingested (ticket #%d), nothing new\n", f, r.Ticket)
			dups++
		case r.Created && r.RelatedTicket != 0:
			fmt.Fprintf(c.App.Writer, "%s: new ticket #%d, related to #%d (%s)\n", f, r.Ticket, r.RelatedTicket, r.RelatedReason)
			created++
		case r.Created:
			fmt.Fprintf(c.App.Writer, "%s: new ticket #%d\n", f, r.Ticket)
			created++
		default:
			fmt.Fprintf(c.App.Writer, "%s: comment %d on ticket #%d (threaded by %s)\n", f, r.Comment, r.Ticket, r.ThreadedBy)
			comments++
		}
	}
	fmt.Fprintf(c.App.Writer, "%d new tickets, %d comments, %d already ingested, %d not tickets (loops, auto-replies, bounces), %d failed\n",
		created, comments, dups, suppressed, failed)
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("%d of %d files failed", failed, len(files)), 1)
	}
	return nil
}

// emlFiles expands folders into the .eml files they hold, sorted so that a
// folder of a conversation is ingested oldest name first.
func emlFiles(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, a)
			continue
		}
		var found []string
		err = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.EqualFold(filepath.Ext(p), ".eml") {
				found = append(found, p)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(found)
		out = append(out, found...)
	}
	return out, nil
}
