package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// Global flags (globalFlags) belong to the app, but admins type them where
// they think of them: `mailgate tickets list --config x.yaml`. urfave/cli v2
// has no flags inherited by subcommands, and declaring them again on each
// command would hide the value given before the command (a context reads the
// nearest flag set that defines the name, set or not). So the arguments are
// rearranged before parsing: each global flag found after the command moves
// in front of it, in its original order, so that a later --set still wins.

// hoistGlobalFlags returns args (program name first) with the global flags
// that follow a command moved before the first command. It follows the
// command tree to know which tokens are values of a command's own flags,
// leaves a flag the command defines itself alone, and stops at "--".
func hoistGlobalFlags(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	globals := flagsByName(app.Flags)
	var (
		before, hoisted, after []string
		flags                  = globals
		commands               = app.Commands
		inCommand, positional  bool
	)
	for i := 1; i < len(args); i++ {
		tok := args[i]
		if tok == "--" {
			after = append(after, args[i:]...)
			break
		}
		if name, hasValue, ok := flagToken(tok); ok {
			f, own := flags[name]
			if !own && inCommand {
				if g, global := globals[name]; global {
					hoisted = append(hoisted, tok)
					if takesValue(g) && !hasValue && i+1 < len(args) {
						i++
						hoisted = append(hoisted, args[i])
					}
					continue
				}
			}
			dst := &after
			if !inCommand {
				dst = &before
			}
			*dst = append(*dst, tok)
			if own && takesValue(f) && !hasValue && i+1 < len(args) {
				i++
				*dst = append(*dst, args[i])
			}
			continue
		}
		if cmd := findCommand(commands, tok); cmd != nil && !positional {
			inCommand = true
			flags = flagsByName(cmd.Flags)
			commands = cmd.Subcommands
		} else {
			positional = true
		}
		after = append(after, tok)
	}
	out := append([]string{args[0]}, before...)
	out = append(out, hoisted...)
	return append(out, after...)
}

// flagToken reports whether tok is a flag ("-x", "--name", "--name=v") and
// its name, in the syntax of Go's flag package that urfave/cli v2 parses with.
func flagToken(tok string) (name string, hasValue, ok bool) {
	if len(tok) < 2 || tok[0] != '-' {
		return "", false, false
	}
	name = strings.TrimPrefix(strings.TrimPrefix(tok, "-"), "-")
	if name == "" || name[0] == '-' || name[0] == '=' {
		return "", false, false
	}
	name, _, hasValue = strings.Cut(name, "=")
	return name, hasValue, true
}

func flagsByName(flags []cli.Flag) map[string]cli.Flag {
	m := map[string]cli.Flag{}
	for _, f := range flags {
		for _, n := range f.Names() {
			m[n] = f
		}
	}
	return m
}

func takesValue(f cli.Flag) bool {
	d, ok := f.(cli.DocGenerationFlag)
	return ok && d.TakesValue()
}

func findCommand(commands []*cli.Command, name string) *cli.Command {
	for _, c := range commands {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// setUsageErrors makes a mistyped flag, anywhere in the command tree, one
// line with the nearest flag name and where the help is, exiting 2 (the
// code of a configuration error), instead of urfave/cli's full help text.
// Each command's help also names the global flags it accepts.
func setUsageErrors(app *cli.App) {
	app.OnUsageError = usageError("", app.Flags)
	var names []string
	for _, f := range app.Flags {
		names = append(names, dashed(f.Names()[0]))
	}
	globals := "\nGLOBAL OPTIONS (before or after the command, see mailgate --help):\n   " +
		strings.Join(names, ", ") + "\n"
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := strings.TrimSpace(path + " " + c.Name)
			c.OnUsageError = usageError(p, c.Flags)
			if c.CustomHelpTemplate == "" {
				c.CustomHelpTemplate = cli.CommandHelpTemplate
				if len(c.Subcommands) > 0 {
					c.CustomHelpTemplate = cli.SubcommandHelpTemplate
				}
				c.CustomHelpTemplate += globals
			}
			walk(p, c.Subcommands)
		}
	}
	walk("", app.Commands)
}

func usageError(path string, flags []cli.Flag) cli.OnUsageErrorFunc {
	help := strings.Join(strings.Fields("mailgate "+path+" --help"), " ")
	return func(_ *cli.Context, err error, _ bool) error {
		msg := err.Error()
		name, unknown := strings.CutPrefix(msg, "flag provided but not defined: -")
		if !unknown {
			if path != "" {
				msg = fmt.Sprintf("%s: %s", path, msg)
			}
			return cli.Exit(fmt.Sprintf("%s (%s)", msg, help), exitConfig)
		}
		msg = "unknown flag " + dashed(name)
		if path != "" {
			msg += fmt.Sprintf(" for %q", path)
		}
		if cli.SuggestFlag != nil {
			candidates := append(append([]cli.Flag{}, flags...), globalFlags()...)
			if s := cli.SuggestFlag(candidates, name, false); s != "" {
				msg += "; did you mean " + s + "?"
			}
		}
		return cli.Exit(fmt.Sprintf("%s (%s)", msg, help), exitConfig)
	}
}

// dashed writes a flag name as an admin types it: -c, --config.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// Two pieces of code move flags typed after arguments, and they stay two
// because they run at different times for different commands:
//
//   - hoistGlobalFlags rewrites the command line before urfave/cli parses
//     it, for every command, and moves only the global flags. It must run
//     that early: a global flag after the command is unknown to the
//     command's flag set, so parsing would fail before any command code
//     runs (and defining it again on the command would hide the value
//     typed before the command, see the top of this file).
//   - flagsAfterArgs runs in the action of a command whose one argument is
//     an EMAIL or an ID (accounts, tickets show, queue show) and parses
//     that command's own flags written after the argument. Running there,
//     it answers in the command's words: a bad flag after the argument ends
//     with the command's usage line (exit 1), and -h after it says where
//     the help is instead of running the command. The same flags moved in
//     front of the argument by a rewrite would get urfave/cli's answers
//     instead: "No help topic for 'EMAIL'" (exit 3) for -h, its usage
//     error (exit 2) for a bad flag. Commands that take several arguments
//     (tickets ingest FILE|DIR...) do not call it, and keep Go's rule that
//     their own flags end at the first argument.

// flagsAfterArgs returns the command's arguments after parsing the flags
// written after the first one, the order people type (`accounts add EMAIL
// --refresh-token-file F`, `tickets show 42 --json`): urfave/cli, like Go's
// flag package, stops at the first argument and would take them for more
// arguments. Parsing stops again at the next argument, which is returned
// with the first. A bad flag is an exit error that ends with usage.
func flagsAfterArgs(c *cli.Context, usage string) ([]string, error) {
	args := c.Args().Slice()
	if len(args) < 2 {
		return args, nil
	}
	helpHint := fmt.Sprintf("%s\n(%s --help lists the flags)", usage, commandPath(c))
	set := flag.NewFlagSet(c.Command.Name, flag.ContinueOnError)
	set.SetOutput(io.Discard)
	for _, f := range c.Command.Flags {
		if err := f.Apply(set); err != nil {
			return nil, err
		}
	}
	if err := set.Parse(args[1:]); errors.Is(err, flag.ErrHelp) {
		return nil, cli.Exit(helpHint, 1)
	} else if err != nil {
		// A bad flag after the argument is the same mistake as before it:
		// one line, a suggestion, exit 2.
		return nil, usageError(strings.TrimPrefix(commandPath(c), "mailgate "), c.Command.Flags)(c, err, true)
	}
	var err error
	set.Visit(func(f *flag.Flag) {
		vals := []string{f.Value.String()}
		if ss, ok := f.Value.(*cli.StringSlice); ok { // repeatable: each value, not "[a b]"
			vals = ss.Value()
		}
		for _, v := range vals {
			if e := c.Set(f.Name, v); e != nil && err == nil {
				err = e
			}
		}
	})
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("%v\n%s", err, usage), 1)
	}
	if c.Bool("help") {
		return nil, cli.Exit(helpHint, 1)
	}
	return append(args[:1:1], set.Args()...), nil
}

// commandPath is how the running command is typed: "mailgate accounts
// add" (the app's root command is named after it).
func commandPath(c *cli.Context) string {
	var names []string
	for _, l := range c.Lineage() {
		if l.Command != nil && l.Command.Name != "" {
			names = append([]string{l.Command.Name}, names...)
		}
	}
	return strings.Join(names, " ")
}
