package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/redistest"
)

// TestGlobalFlagsAfterTheCommand: --config, -c, --set and --redis-url work
// where an admin types them, after the command, and a later --set still wins.
func TestGlobalFlagsAfterTheCommand(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "x.yaml")
	os.WriteFile(cfg, []byte("relay:\n  listen: 127.0.0.1:2611\n"), 0o600)
	code, out, stderr := mailgate(t, "config", "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "127.0.0.1:2611") {
		t.Errorf("config check --config x.yaml = %d, the file's relay.listen not in use:\n%s\n%s", code, out, stderr)
	}
	code, out, _ = mailgate(t, "--set", "log.level=warn", "config", "check", "-c", cfg, "--set", "log.level=debug")
	if code != 0 || !strings.Contains(out, "2611") || !strings.Contains(out, "level: debug") {
		t.Errorf("config check -c x.yaml --set log.level=debug = %d:\n%s", code, out)
	}

	code, out, _ = mailgate(t, "tickets", "list", "--help")
	if code != 0 || !strings.Contains(out, "--limit") || !strings.Contains(out, "--config, --redis-url") {
		t.Errorf("tickets list --help = %d, does not name the global flags:\n%s", code, out)
	}

	srv := redistest.Start(t)
	code, out, stderr = mailgate(t, "tickets", "list", "--redis-url", srv.URL)
	if code != 0 {
		t.Errorf("tickets list --redis-url = %d\n%s\n%s", code, out, stderr)
	}
	// A flag after a positional argument is used too.
	code, _, stderr = mailgate(t, "tickets", "ingest", t.TempDir(), "--redis-url", "redis://127.0.0.1:1/0")
	if code == 0 || !strings.Contains(stderr, "127.0.0.1:1") {
		t.Errorf("tickets ingest DIR --redis-url = %d, %q: the flag after the argument was not used", code, stderr)
	}
}

// TestUnknownFlagIsOneLine: a mistyped flag gives one line with the nearest
// flag and where the help is, and exit 2, not the whole help.
func TestUnknownFlagIsOneLine(t *testing.T) {
	code, out, stderr := mailgate(t, "tickets", "list", "--confg", "x.yaml")
	want := `mailgate: unknown flag --confg for "tickets list"; did you mean --config? (mailgate tickets list --help)` + "\n"
	if code != 2 || stderr != want || out != "" {
		t.Errorf("tickets list --confg = exit %d\nstderr %q\nstdout %q\nwant exit 2 and %q", code, stderr, out, want)
	}
	// The command's own flags are suggested too.
	code, _, stderr = mailgate(t, "tickets", "list", "--limt", "3")
	if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "did you mean --limit?") {
		t.Errorf("tickets list --limt = %d, %q", code, stderr)
	}
	// After the command's argument, the same line and exit.
	code, _, stderr = mailgate(t, "accounts", "set", "alice@example.com", "--aliass", "help@example.com")
	if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, `unknown flag --aliass for "accounts set"; did you mean --alias?`) {
		t.Errorf("accounts set EMAIL --aliass = %d, %q", code, stderr)
	}
	code, _, stderr = mailgate(t, "--redis-ur", "x", "status")
	if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "did you mean --redis-url? (mailgate --help)") {
		t.Errorf("--redis-ur status = %d, %q", code, stderr)
	}
}

// TestHoistGlobalFlags: where each token ends up; a command's own flag
// values and everything after "--" stay where they are.
func TestHoistGlobalFlags(t *testing.T) {
	app := newApp(nil, nil)
	for _, tc := range []struct{ in, want string }{
		{"tickets list --config x.yaml", "--config x.yaml tickets list"},
		{"-c a.yaml tickets list -c b.yaml --limit 3", "-c a.yaml -c b.yaml tickets list --limit 3"},
		{"tickets ingest --support-address --set dir --set=a=b", "--set=a=b tickets ingest --support-address --set dir"},
		{"tickets show 7 --redis-url r -- --config x", "--redis-url r tickets show 7 -- --config x"},
		{"--config x.yaml version", "--config x.yaml version"},
	} {
		got := strings.Join(hoistGlobalFlags(app, append([]string{"mailgate"}, strings.Fields(tc.in)...))[1:], " ")
		if got != tc.want {
			t.Errorf("mailgate %s\n got  %s\n want %s", tc.in, got, tc.want)
		}
	}
}
