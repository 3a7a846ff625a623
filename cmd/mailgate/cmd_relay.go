package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/mailgate/mailgate/config"
)

// defaultBcryptCost costs about a quarter of a second per AUTH on a
// current server: slow for a password guesser, unnoticed by a helpdesk
// that authenticates once per connection.
const defaultBcryptCost = 12

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
		fmt.Fprintf(c.App.ErrWriter, "warning: %s %d-character password is weak for a relay that can send as your support addresses; 12 or more is better\n", article(n), n)
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
	fmt.Fprintf(w, "# then reload a running `mailgate serve` with SIGHUP (systemctl reload mailgate, or kill -HUP PID):\n")
	fmt.Fprintf(w, "# serve reads relay users again and keeps running. The helpdesk authenticates as %q with the password.\n", user)
	fmt.Fprint(w, b.String())
	return nil
}

// article is the English indefinite article before the number n said
// aloud: "an" for 8, 11, 18 and 80-89 ("an eleven"), else "a".
func article(n int) string {
	for n >= 1000 {
		n /= 1000
	}
	if n == 8 || n == 11 || n == 18 || n >= 80 && n <= 89 || n >= 800 && n <= 899 {
		return "an"
	}
	return "a"
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
