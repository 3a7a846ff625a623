package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/internal/oneline"
	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
)

// defaultBcryptCost costs about a quarter of a second per AUTH on a
// current server: slow for a password guesser, unnoticed by a helpdesk
// that authenticates once per connection.
const defaultBcryptCost = 12

// showHeaderLines is how much of a queued message `queue show` prints:
// enough to recognise it without dumping a 25 MB attachment.
const showHeaderLines = 20

func relayCommand() *cli.Command {
	return &cli.Command{
		Name:  "relay",
		Usage: "the SMTP relay the helpdesk sends its notifications through",
		Subcommands: []*cli.Command{
			{
				Name:  "passwd",
				Usage: "hash a relay user's password (bcrypt) for relay.users",
				Description: "Reads the password from standard input: typed twice, without echo, on a terminal;\n" +
					"otherwise the first line of the input (e.g. `mailgate relay passwd < file`).\n" +
					"Prints the bcrypt hash and the relay.users entry to paste into the configuration.\n" +
					"The password itself is never printed nor stored.",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "cost", Value: defaultBcryptCost, Usage: fmt.Sprintf("bcrypt cost `N` (%d to %d; each step doubles the work)", bcrypt.MinCost, bcrypt.MaxCost)},
					&cli.StringFlag{Name: "user", Value: "helpdesk", Usage: "user `NAME` for the configuration snippet (the SMTP AUTH user name)"},
					&cli.BoolFlag{Name: "hash-only", Usage: "print only the hash (for scripts)"},
				},
				Action: relayPasswd,
			},
		},
	}
}

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

// relayPasswd prints a bcrypt hash for relay.users. bcrypt rather than
// argon2: the server checks both, and bcrypt needs no parameters the admin
// could get wrong.
func relayPasswd(c *cli.Context) error {
	cost := c.Int("cost")
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return cli.Exit(fmt.Sprintf("--cost %d: want %d to %d (default %d)", cost, bcrypt.MinCost, bcrypt.MaxCost, defaultBcryptCost), 1)
	}
	user := strings.TrimSpace(c.String("user"))
	if user == "" {
		return cli.Exit("--user: want the SMTP AUTH user name, e.g. helpdesk", 1)
	}
	pw, err := readPassword(c.App.Reader, c.App.ErrWriter)
	if err != nil {
		return cli.Exit(err, 1)
	}
	if n := len([]rune(pw)); n < 12 {
		fmt.Fprintf(c.App.ErrWriter, "warning: a %d-character password is weak for a relay that can send as your support addresses; 12 or more is better\n", n)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	if errors.Is(err, bcrypt.ErrPasswordTooLong) {
		return cli.Exit("the password is longer than 72 bytes, which bcrypt cannot hash: choose a shorter one", 1)
	}
	if err != nil {
		return err
	}
	w := c.App.Writer
	if c.Bool("hash-only") {
		fmt.Fprintln(w, string(hash))
		return nil
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	err = enc.Encode(map[string]any{"relay": map[string]any{"users": []config.RelayUser{{Name: user, PasswordHash: string(hash)}}}})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s\n\n", hash)
	fmt.Fprintf(w, "# Add to the configuration file (merge the entry into relay.users if it has some),\n")
	fmt.Fprintf(w, "# then restart `mailgate serve`. The helpdesk authenticates as %q with the password.\n", user)
	fmt.Fprint(w, b.String())
	return nil
}

// readPassword reads the password from in: twice and without echo on a
// terminal, else the first line. Prompts go to prompt (stderr), so that
// stdout holds only the result.
func readPassword(in io.Reader, prompt io.Writer) (string, error) {
	if in == nil {
		in = os.Stdin
	}
	br := bufio.NewReader(in)
	f, _ := in.(*os.File)
	restore, tty := noEcho(f, prompt)
	if !tty {
		pw, err := readLine(br)
		if err != nil {
			return "", err
		}
		if pw == "" {
			return "", errors.New("no password on standard input: type it on a terminal, or pipe it (`mailgate relay passwd < file`)")
		}
		return pw, nil
	}
	defer restore()
	fmt.Fprint(prompt, "Password: ")
	pw, err := readLine(br)
	fmt.Fprintln(prompt) // the Enter was not echoed either
	if err != nil {
		return "", err
	}
	if pw == "" {
		return "", errors.New("empty password: nothing printed")
	}
	fmt.Fprint(prompt, "Password again: ")
	again, err := readLine(br)
	fmt.Fprintln(prompt)
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", errors.New("the two passwords differ: nothing printed, run the command again")
	}
	return pw, nil
}

// readLine returns one line without its line ending; spaces are kept, as
// they may be part of the password.
func readLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// noEcho turns off echo when f is a terminal and says whether it is one.
// golang.org/x/term is not among mailgate's dependencies; stty does the
// same on every Unix, and its failure on a character device that is no
// terminal (/dev/null) tells us it is none. Where stty does not exist
// (Windows) the password is read with echo, after a warning.
func noEcho(f *os.File, warn io.Writer) (restore func(), tty bool) {
	if f == nil {
		return nil, false
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil, false
	}
	stty := func(arg string) error {
		cmd := exec.Command("stty", arg)
		cmd.Stdin = f
		return cmd.Run()
	}
	if err := stty("-echo"); errors.Is(err, exec.ErrNotFound) {
		fmt.Fprintln(warn, "warning: cannot turn off echo (no stty): the password shows as you type it")
		return func() {}, true
	} else if err != nil {
		return nil, false
	}
	// A Ctrl-C at the prompt must not leave the terminal without echo.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			stty("echo")
			fmt.Fprintln(warn)
			os.Exit(130)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
		stty("echo")
	}, true
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
			m.Attempts, nextTry(m, now), dash(m.Route.String()), clip(envelopeFrom(m.From), 40), len(m.To), ticketRef(m.Ticket),
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
	if len(m.To) > 0 {
		fmt.Fprintf(w, "To:           %s\n", strings.Join(m.To, ", "))
	}
	if len(m.Done) > 0 {
		fmt.Fprintf(w, "Delivered to: %s\n", strings.Join(m.Done, ", "))
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
	case smtprelay.StateQueued:
		return cli.Exit(fmt.Sprintf("%s is not deferred: it is ready for, or in the hands of, a delivery worker; nothing to retry", id), 1)
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
	case smtprelay.StateSent:
		return "sent"
	case smtprelay.StateBounced:
		return "bounced (a delivery status notification went to the sender)"
	}
	return m.State
}

func nextTry(m *smtprelay.Message, now time.Time) string {
	switch {
	case m.State == smtprelay.StateQueued:
		return "now"
	case m.NextAttempt.IsZero():
		return "-"
	case m.NextAttempt.After(now):
		return "in " + shortDuration(m.NextAttempt.Sub(now))
	}
	return "due"
}

// shortDuration renders an age for a table: 45s, 12m, 3h05m, 2d04h.
func shortDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// envelopeFrom shows the null sender of a bounce as SMTP writes it.
func envelopeFrom(from string) string {
	if from == "" {
		return "<>"
	}
	return from
}

func ticketRef(id int64) string {
	if id == 0 {
		return "-"
	}
	return fmt.Sprintf("#%d", id)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// relayLimits turns the relay.* limits of the configuration into the
// relay's per-kind Gmail limits. Consumer Gmail has no published daily
// recipient cap separate from its message cap, so only the message and
// per-message counts apply to it.
func relayLimits(cfg *config.Config) func(accounts.Kind) sendlimit.Limits {
	r := cfg.Relay
	return func(kind accounts.Kind) sendlimit.Limits {
		if kind == accounts.KindWorkspace {
			return sendlimit.Limits{
				Messages:       r.WorkspaceDailyLimit,
				Recipients:     r.WorkspaceDailyRecipients,
				External:       r.WorkspaceDailyExternalRecipients,
				PerMessageRcpt: r.MaxRecipientsPerMessage,
			}
		}
		return sendlimit.Limits{Messages: r.GmailDailyLimit, PerMessageRcpt: r.MaxRecipientsPerMessage}
	}
}

// quotaCells is the width of the quota bar.
const quotaCells = 10

// quotaColumn renders an account's Gmail use over the last 24 hours for
// `accounts list` and `status`: "[######----] 312/500", plus " BLOCKED by
// Gmail" once Gmail answered with its daily-limit error.
func quotaColumn(ctx context.Context, q *smtprelay.Quota, a *accounts.Account, limits func(accounts.Kind) sendlimit.Limits) string {
	used, blocked, err := q.Used(ctx, a.Email)
	return quotaCell(status.Quota{Used: used, Limit: limits(a.Kind).Messages, Blocked: blocked}, err)
}

// quotaCell is quotaBar of q, or why the quota could not be read.
func quotaCell(q status.Quota, err error) string {
	if err != nil {
		return "quota unknown (Redis: " + err.Error() + ")"
	}
	return quotaBar(q.Used, q.Limit, q.Blocked)
}

// quotaBar draws "[######----] 312/500", plus " BLOCKED by Gmail".
func quotaBar(used int64, limit int, blocked bool) string {
	var s string
	if limit <= 0 {
		s = fmt.Sprintf("%d sent (no limit)", used)
	} else {
		n := used * quotaCells / int64(limit)
		// Some use shows as one cell: an empty bar reads as "unused".
		if used > 0 && n == 0 {
			n = 1
		}
		n = min(n, quotaCells)
		s = fmt.Sprintf("[%s%s] %d/%d", strings.Repeat("#", int(n)), strings.Repeat("-", quotaCells-int(n)), used, limit)
	}
	if blocked {
		s += " BLOCKED by Gmail"
	}
	return s
}
