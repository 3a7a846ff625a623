package main

import "github.com/urfave/cli/v2"

// The demo runs mailgate against in-process fakes of Google (OAuth, Gmail
// IMAP and SMTP) and of the recipients' mail servers. Those fakes are test
// code, not fit for production, so they are only in a mailgate built with
// -tags demo: cmd_demo.go and cmd_demo_scene.go. The mailgate that operators
// build and run (go install, go build ./cmd/mailgate, deploy/) has in their
// place cmd_demo_rerun.go, whose demo builds the tagged mailgate from the
// source tree it is run in and hands it the same command line. Both share
// this definition, so `mailgate demo --help` reads the same in either.
func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run mailgate end to end on this machine against a fake Gmail, fake Google OAuth and a fake recipient MX (no Google account needed)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "keep-running", Usage: "leave everything up after the scene, and print the addresses to try it by hand"},
		},
		Action: demo,
	}
}
