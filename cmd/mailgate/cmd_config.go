package main

import (
	"fmt"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/config"
)

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "inspect the configuration",
		Subcommands: []*cli.Command{{
			Name:  "check",
			Usage: "validate the configuration and print the effective values, secrets masked",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "connect", Usage: "also try Redis, the IMAP and SMTP hosts and the token endpoint, and say what answered"},
			},
			Action: func(c *cli.Context) error {
				cfg, err := loadConfig(c)
				if err != nil {
					return err
				}
				if err := checkFiles(cfg); err != nil {
					return err
				}
				out, err := cfg.Masked().YAML()
				if err != nil {
					return err
				}
				src := c.String("config")
				if src == "" {
					src = "built-in defaults (no --config)"
				}
				fmt.Fprintf(c.App.Writer, "# configuration OK: %s, with MAILGATE_* and flag overrides\n", src)
				fmt.Fprintf(c.App.Writer, "# key file: %s\n%s", keyFileState(cfg.Secrets.KeyFile), out)
				if _, warning := cfg.RelayHostname(config.SystemNames{}); warning != "" {
					fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", warning)
				}
				if c.Bool("connect") {
					fmt.Fprintln(c.App.Writer, "# connections:")
					return checkConnect(c.Context, c.App.Writer, cfg)
				}
				return nil
			},
		}},
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "mailgate %s\n", version())
			return nil
		},
	}
}

// buildVersion is set with -ldflags "-X main.buildVersion=v1.2.3".
var buildVersion string

func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return v
}
