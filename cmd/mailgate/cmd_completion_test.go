package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCompletionAndMan: the scripts and the manual page name the commands,
// bash accepts its script, and the binary answers the words the bash and zsh
// scripts ask it for.
func TestCompletionAndMan(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		code, out, stderr := mailgate(t, "completion", shell)
		if code != 0 || !strings.Contains(out, "mailgate") {
			t.Errorf("completion %s = %d, %q\n%s", shell, code, stderr, out)
		}
		if shell == "fish" {
			wantOutput(t, "completion fish", out, "tickets", "relay", "ingest", "-l config")
		}
		if shell == "bash" {
			cmd := exec.Command("bash", "-n")
			cmd.Stdin = strings.NewReader(out)
			if msg, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("bash -n refuses the completion script: %v\n%s", err, msg)
			}
		}
	}
	// urfave/cli reads the words typed so far from os.Args.
	words := func(args ...string) string {
		saved := os.Args
		defer func() { os.Args = saved }()
		os.Args = append([]string{"mailgate"}, args...)
		_, out, _ := mailgate(t, args...)
		return out
	}
	wantOutput(t, "the words for `mailgate <TAB>`", words("--generate-bash-completion"), "tickets\n", "relay\n", "completion\n", "man\n")
	wantOutput(t, "the words for `mailgate tickets <TAB>`", words("tickets", "--generate-bash-completion"), "list\n", "ingest\n")

	code, page, _ := mailgate(t, "man")
	if code != 0 || !strings.HasPrefix(page, ".nh\n.TH mailgate 1") {
		t.Errorf("man = %d, not a roff page:\n%.200s", code, page)
	}
	wantOutput(t, "man", page, "tickets", "relay", "--config", "ingest")

	code, _, stderr := mailgate(t, "completion", "tcsh")
	if code != 2 || !strings.Contains(stderr, "want bash, zsh or fish") {
		t.Errorf("completion tcsh = %d, %q", code, stderr)
	}
}
