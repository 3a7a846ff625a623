package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/imapfetch"
)

func fetchCommand() *cli.Command {
	return &cli.Command{
		Name:      "fetch",
		Usage:     "poll connected accounts once and turn new mail into tickets (serve does this continuously)",
		ArgsUsage: "[EMAIL]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "once", Value: true, Usage: "poll once and exit (the only mode: run `serve` to keep fetching)"},
		},
		Action: fetchOnce,
	}
}

func fetchOnce(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	acc, rdb, err := openAccounts(c.Context, cfg, true)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st := newTicketStore(rdb, cfg, acc, slog.Default())
	tokens, err := newTokens(cfg, acc, slog.Default(), nil)
	if err != nil {
		return err
	}
	f, err := newFetcher(cfg, acc, st, tokens, slog.Default(), nil)
	if err != nil {
		return err
	}
	emails := c.Args().Slice()
	if len(emails) == 0 {
		all, err := acc.List(c.Context)
		if err != nil {
			return err
		}
		for _, a := range all {
			if a.State == accounts.StateConnected {
				emails = append(emails, a.Email)
			}
		}
		if len(emails) == 0 {
			return cli.Exit("no connected account: connect one with `mailgate accounts connect EMAIL`", 1)
		}
	}
	w := c.App.Writer
	failed := 0
	for _, email := range emails {
		p := newProgress(w, email)
		r, err := f.PollOnce(c.Context, email, p.update)
		p.finish()
		var held *imapfetch.LeaseHeldError
		switch {
		case errors.As(err, &held):
			fmt.Fprintf(w, "%s: %s\n", email, leaseHeldMessage(held.Lease))
		case err != nil:
			fmt.Fprintf(c.App.ErrWriter, "%s: %v\n", email, err)
			failed++
		default:
			fmt.Fprintf(w, "%s: %d fetched, %d new tickets, %d comments, %d already imported, %d not tickets (loops, auto-replies, bounces), %d quarantined, %d to retry\n",
				email, r.Fetched, r.Created, r.Comments, r.Duplicates, r.Suppressed, r.Quarantined, r.Errors)
		}
	}
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("%d of %d accounts failed", failed, len(emails)), 1)
	}
	return nil
}

// leaseHeldMessage says who fetches the account instead of this command,
// until when, and what that means.
func leaseHeldMessage(l accounts.Lease) string {
	if l.Liveness == accounts.Alive {
		return fmt.Sprintf("lease held by %s: that mailgate process (serve, or another fetch) is fetching this account; nothing to do here", l)
	}
	return fmt.Sprintf("lease held by %s: the mailgate process there is fetching this account; nothing to do here (if that process is gone, its lease runs out then and the next fetch takes it)", l)
}
