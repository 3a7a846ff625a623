// This file is the accounts command: its subcommands and flags, and the
// ones that read or change a known account (list, set, disconnect).

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
)

func accountsCommand() *cli.Command {
	importFlag := &cli.IntFlag{Name: "import-recent", Value: 50,
		Usage: "on first connection, turn the `N` most recent mails (read or unread) into tickets with helpdesk triggers suppressed; 0 imports none"}
	kindFlag := &cli.StringFlag{Name: "kind", DefaultText: "gmail, or unchanged for a known account",
		Usage: fmt.Sprintf("`KIND` of account: gmail (%d mails a day) or workspace (Google Workspace, %d a day)", sendlimit.GmailMessages, sendlimit.WorkspaceMessages)}
	noBrowser := &cli.BoolFlag{Name: "no-browser", Usage: "only print the consent URL, do not try to open a browser (headless servers)"}
	// A fixed port makes `ssh -L PORT:127.0.0.1:PORT server` possible: the
	// browser on the admin's machine reaches the listener on the server.
	listenPort := &cli.IntFlag{Name: "listen-port", DefaultText: "a free port",
		Usage: "receive Google's redirect on 127.0.0.1:`PORT` (forward it with ssh -L PORT:127.0.0.1:PORT from the machine with the browser)"}
	skipVerify := &cli.BoolFlag{Name: "skip-verify", Usage: "store the token without asking Google which account it belongs to"}
	// Not Required: cli would check that before emailArg parses the flags
	// written after EMAIL. accountsConnect checks it for add.
	tokenFile := &cli.StringFlag{Name: "refresh-token-file", Usage: "read the account's OAuth refresh token from `FILE` instead of a browser consent"}
	return &cli.Command{
		Name:  "accounts",
		Usage: "connect, list and disconnect the Gmail accounts mail is fetched from",
		Subcommands: []*cli.Command{
			{
				Name:      "connect",
				Usage:     "authorise a Gmail account in a browser (OAuth consent) and start fetching it",
				ArgsUsage: "EMAIL",
				Flags:     []cli.Flag{importFlag, kindFlag, noBrowser, listenPort},
				Action:    accountsConnect,
			},
			{
				Name:      "add",
				Usage:     "connect a Gmail account with a refresh token obtained elsewhere (no browser)",
				ArgsUsage: "EMAIL",
				Flags:     []cli.Flag{tokenFile, importFlag, kindFlag, skipVerify},
				Action:    accountsConnect,
			},
			{
				Name:   "list",
				Usage:  "list accounts with their state, last poll and warnings",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "machine-readable JSON output (never includes tokens)"}},
				Action: accountsList,
			},
			{
				Name:      "disconnect",
				Usage:     "stop fetching an account and forget its token; its position is kept for a reconnect",
				ArgsUsage: "EMAIL",
				Action:    accountsDisconnect,
			},
			{
				Name:      "set",
				Usage:     "choose how the relay sends for an account: via Gmail or not, the fallback beyond its quota, its \"Send mail as\" aliases",
				ArgsUsage: "EMAIL",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "alias", Usage: "add a \"Send mail as\" address verified in the account's Gmail settings: mail From it goes via the account's Gmail (its quota), mail to it becomes tickets (repeatable)"},
					&cli.StringSliceFlag{Name: "remove-alias", Usage: "remove an alias (repeatable)"},
					&cli.BoolFlag{Name: "send-via-gmail", Value: true, Usage: "send the account's notifications through its Gmail (Sent folder, Google's quota); false sends everything directly, as an admin who keeps hitting the limit does"},
					&cli.StringFlag{Name: "fallback", Value: "default", Usage: "beyond the quota or with attachments: direct (DKIM-signed for the account's domain), rewrite-from (From on relay.rewrite_from_address), defer (wait for the quota), or default"},
				},
				Action: accountsSet,
			},
			{
				Name:      "reconnect",
				Usage:     "authorise a known account again (browser, or --refresh-token-file) and clear its warning",
				ArgsUsage: "EMAIL",
				Flags:     []cli.Flag{tokenFile, noBrowser, listenPort, skipVerify},
				Action:    accountsConnect,
			},
		},
	}
}

func accountsList(c *cli.Context) error {
	cfg, st, rdb, err := loadAccounts(c)
	if err != nil {
		return err
	}
	defer rdb.Close()
	list, err := st.List(c.Context)
	if err != nil {
		return err
	}
	quota := smtprelay.NewQuota(smtprelay.NewQueue(rdb, smtprelay.QueueOptions{Prefix: cfg.Redis.Prefix}))
	limits := relayLimits(cfg)
	if c.Bool("json") {
		type withQuota struct {
			*accounts.Account
			Quota quotaJSON `json:"quota"`
		}
		out := make([]withQuota, len(list))
		for i, a := range list {
			q, _ := accountQuota(c.Context, quota, a, limits, cfg.Relay.QuotaWarnAt)
			out[i] = withQuota{a, q}
		}
		return writeJSON(c.App.Writer, out)
	}
	if len(list) == 0 {
		fmt.Fprintln(c.App.Writer, "no accounts: connect one with `mailgate accounts connect EMAIL`")
		return nil
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EMAIL\tKIND\tSTATE\tLAST POLL\tIMPORTED\tGMAIL QUOTA (24 H)\tALIASES\tWARNING")
	for _, a := range list {
		poll := "never"
		if !a.LastPoll.IsZero() {
			poll = a.LastPoll.Local().Format("2006-01-02 15:04")
		}
		imported := fmt.Sprint(a.Imported)
		if a.ImportRecent > 0 && !a.ImportDone && a.State == accounts.StateConnected {
			imported += fmt.Sprintf(" (import of %d pending)", a.ImportRecent)
		}
		warning := joinNotes(a.ThrottleNote(time.Now()), a.Warning)
		q, err := accountQuota(c.Context, quota, a, limits, cfg.Relay.QuotaWarnAt)
		if q.Warning != "" {
			warning = strings.TrimPrefix(warning+"; "+q.Warning, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Email, a.Kind, a.State, poll, imported,
			quotaCell(q.Quota, err), aliasList(a.Aliases), clip(warning, 100))
	}
	return tw.Flush()
}

// aliasList is an account's aliases as `accounts list` shows them.
func aliasList(aliases []string) string {
	if len(aliases) == 0 {
		return "none"
	}
	return strings.Join(aliases, ", ")
}

// quotaJSON is an account's Gmail sending over the last 24 hours, as
// `status` shows it, with the warning `accounts list` adds.
type quotaJSON struct {
	status.Quota
	Warning string `json:"warning,omitempty"`
}

// accountQuota reads an account's quota use and words the warning the
// admin sees as the limit nears. On a failed read the use
// counts as 0 and err says why.
func accountQuota(ctx context.Context, q *smtprelay.Quota, a *accounts.Account, limits func(accounts.Kind) sendlimit.Limits, warnAt float64) (quotaJSON, error) {
	sq, err := status.ReadQuota(ctx, q, a.Email, limits(a.Kind).Messages)
	r := quotaJSON{Quota: sq}
	used := sq.Used
	switch {
	case sq.Blocked:
		r.Warning = "Gmail reported its daily sending limit: notifications go out directly for now"
	case r.Limit > 0 && used >= int64(r.Limit):
		r.Warning = fmt.Sprintf("daily Gmail limit reached (%d/%d): notifications go out by the fallback until the 24-hour window frees", used, r.Limit)
	case sendlimit.WarnAt(r.Limit, warnAt) > 0 && used >= int64(sendlimit.WarnAt(r.Limit, warnAt)):
		r.Warning = fmt.Sprintf("Gmail quota at %d%% (%d/%d)", used*100/int64(r.Limit), used, r.Limit)
	}
	return r, err
}

func accountsSet(c *cli.Context) error { return withAccount(c, setSending) }

// setSending changes the sending policy, the aliases, or both. With only
// --alias or --remove-alias, the policy is left as it is.
func setSending(c *cli.Context, st *accounts.Store, email string) error {
	add, remove := c.StringSlice("alias"), c.StringSlice("remove-alias")
	if len(add) > 0 || len(remove) > 0 {
		if err := st.SetAliases(c.Context, email, add, remove); err != nil {
			return cli.Exit(err, 1)
		}
		a, err := st.Get(c.Context, email)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "%s: aliases %s\n", a.Email, aliasList(a.Aliases))
		if !c.IsSet("send-via-gmail") && !c.IsSet("fallback") {
			return nil
		}
	}
	fallback, err := accounts.ParseFallback(c.String("fallback"))
	if err != nil {
		return cli.Exit(err, 1)
	}
	if err := st.SetSending(c.Context, email, c.Bool("send-via-gmail"), fallback); err != nil {
		return cli.Exit(err, 1)
	}
	policy := fallback.String()
	if fallback == accounts.FallbackDefault {
		policy += " (direct when a DKIM key is configured for the account's domain, else defer)"
	}
	fmt.Fprintf(c.App.Writer, "%s: send via Gmail %v, fallback %s\n", email, c.Bool("send-via-gmail"), policy)
	return nil
}

func accountsDisconnect(c *cli.Context) error { return withAccount(c, disconnectAccount) }

func disconnectAccount(c *cli.Context, st *accounts.Store, email string) error {
	if err := st.Disconnect(c.Context, email); errors.Is(err, accounts.ErrNotFound) {
		return cli.Exit(fmt.Sprintf("no account %s (see `mailgate accounts list`)", email), 1)
	} else if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Disconnected %s: no more mail is fetched from it and it is no longer a support address.\n"+
		"Its refresh token was deleted; to revoke mailgate's access at Google as well, remove it at https://myaccount.google.com/permissions.\n"+
		"`mailgate accounts reconnect %s` resumes where fetching stopped, without duplicate tickets.\n", email, email)
	return nil
}

// withAccount serves the commands that change a known account (set,
// disconnect): it takes the EMAIL argument, opens the account store without
// the sealing key (neither reads a token) and runs fn, closing Redis after.
func withAccount(c *cli.Context, fn func(c *cli.Context, st *accounts.Store, email string) error) error {
	email, err := emailArg(c)
	if err != nil {
		return err
	}
	_, st, rdb, err := loadAccounts(c)
	if err != nil {
		return err
	}
	defer rdb.Close()
	return fn(c, st, email)
}

// loadAccounts loads the configuration and opens Redis and the account
// store without the sealing key: enough for the commands that read
// accounts or change their settings, and they never create a key file.
func loadAccounts(c *cli.Context) (*config.Config, *accounts.Store, redis.UniversalClient, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return nil, nil, nil, err
	}
	st, rdb, err := openAccounts(c.Context, cfg, false)
	if err != nil {
		return nil, nil, nil, err
	}
	return cfg, st, rdb, nil
}

// emailArg returns the one EMAIL argument, lower-cased, with the flags
// written after it parsed too (flagsAfterArgs).
func emailArg(c *cli.Context) (string, error) {
	usage := fmt.Sprintf("usage: mailgate accounts %s EMAIL [flags]", c.Command.Name)
	args, err := flagsAfterArgs(c, usage)
	if err != nil {
		return "", err
	}
	if len(args) == 0 {
		return "", cli.Exit(usage, 1)
	}
	if len(args) > 1 {
		return "", cli.Exit(fmt.Sprintf("unexpected arguments %q\n%s", args[1:], usage), 1)
	}
	email, err := accounts.NormalizeEmail(args[0])
	if err != nil {
		return "", cli.Exit(fmt.Sprintf("%v\n%s", err, usage), 1)
	}
	return email, nil
}
