package main

import (
	_ "embed"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

// The bash and zsh scripts are urfave/cli's: they ask the binary for the
// words to offer (--generate-bash-completion), which it answers from the
// command definitions, so they never go stale. fish gets a script rendered
// from the same definitions.
var (
	//go:embed completion/mailgate.bash
	bashCompletion string
	//go:embed completion/mailgate.zsh
	zshCompletion string
)

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: "bash: source <(mailgate completion bash)\n" +
			"zsh:  source <(mailgate completion zsh)   (after compinit)\n" +
			"fish: mailgate completion fish > ~/.config/fish/completions/mailgate.fish",
		Action: func(c *cli.Context) error {
			var script string
			switch shell := c.Args().First(); shell {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				script = s
			default:
				return cli.Exit(fmt.Sprintf("completion %q: want bash, zsh or fish (mailgate completion --help)", shell), exitConfig)
			}
			_, err := io.WriteString(c.App.Writer, script)
			return err
		},
	}
}

func manCommand() *cli.Command {
	return &cli.Command{
		Name:  "man",
		Usage: "print the manual page (roff), rendered from the command definitions",
		Description: "mailgate man > /usr/local/share/man/man1/mailgate.1 && man mailgate\n" +
			"or: mailgate man | man -l -",
		Action: func(c *cli.Context) error {
			page, err := c.App.ToManWithSection(1)
			if err != nil {
				return err
			}
			_, err = io.WriteString(c.App.Writer, page)
			return err
		},
	}
}
