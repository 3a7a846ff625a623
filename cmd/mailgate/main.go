// Command mailgate turns Gmail mailboxes into a helpdesk's ticket queue and
// relays the helpdesk's outgoing mail. This package only parses flags and
// wires the configuration into the packages that do the work.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run is main without the process: tests call it with their own writers.
func run(args []string, stdout, stderr io.Writer) int {
	return runApp(newApp(stdout, stderr), args, stderr)
}

// runApp runs app and turns its error into a message and an exit code.
func runApp(app *cli.App, args []string, stderr io.Writer) int {
	if err := app.Run(hoistGlobalFlags(app, args)); err != nil {
		code := 1
		// A configuration error keeps its exit code (2) when a caller
		// wrapped it with context.
		if ec := cli.ExitCoder(nil); errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		// An empty message: the error was reported already (the
		// demo's own process, see cmd_demo_rerun.go).
		if err.Error() != "" {
			fmt.Fprintf(stderr, "mailgate: %v\n", err)
		}
		return code
	}
	return 0
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:      "mailgate",
		Usage:     "Gmail mailboxes in, helpdesk tickets out (Redis); the helpdesk's mail relayed via Gmail or DKIM-signed direct",
		Version:   version(),
		Writer:    stdout,
		ErrWriter: stderr,
		// run prints errors itself, once, with the exit code they carry.
		ExitErrHandler: func(*cli.Context, error) {},
		Flags:          globalFlags(),
		// The shell completion scripts ask the binary for the words.
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			demoCommand(),
			configCommand(),
			accountsCommand(),
			fetchCommand(),
			serveCommand(),
			statusCommand(),
			queueCommand(),
			relayCommand(),
			dkimCommand(),
			dnsCommand(),
			ticketsCommand(),
			versionCommand(),
			completionCommand(),
			manCommand(),
		},
	}
	setUsageErrors(app)
	return app
}
