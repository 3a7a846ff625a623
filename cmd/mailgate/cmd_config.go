package main

import (
	"fmt"
	"os"
	"runtime"
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
				&cli.BoolFlag{Name: "changed", Usage: "print only the keys whose values differ from the defaults (as postconf -n), secrets masked"},
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
				if c.Bool("changed") {
					if err := printChanged(c, cfg); err != nil {
						return err
					}
				} else {
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
				}
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

// printChanged prints the keys that differ from the defaults, one a line.
func printChanged(c *cli.Context, cfg *config.Config) error {
	lines, err := cfg.Changed(c.String("config"), os.Environ())
	if err != nil {
		return err
	}
	for _, l := range lines {
		fmt.Fprintln(c.App.Writer, l)
	}
	return nil
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version and the Go release it was built with",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "mailgate %s (%s)\n", version(), runtime.Version())
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
	return formatVersion(bi)
}

// formatVersion names the build once. go install ...@v1.2.3 stamps the
// tag; a build from a checkout stamps a pseudo-version that already holds
// the revision (v0.0.0-20261202145900-c80ccf7abcde, "+dirty" when the tree
// had changes), so the revision is added only when the main module has no
// version at all (go build -buildvcs=false, or go run).
func formatVersion(bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v != "" && v != "(devel)" {
		return v
	}
	v = "devel"
	var rev string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return v
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v += "-" + rev
	if modified {
		v += "+dirty"
	}
	return v
}
