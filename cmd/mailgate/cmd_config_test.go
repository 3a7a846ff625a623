package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormatVersion(t *testing.T) {
	const rev = "c80ccf7abcdef0123456789abcdef0123456789a"
	for _, tc := range []struct {
		name     string
		main     string
		settings map[string]string
		want     string
	}{
		{"tag", "v1.2.3", map[string]string{"vcs.revision": rev}, "v1.2.3"},
		{"pseudo-version", "v0.0.0-20261202145900-c80ccf7abcde", map[string]string{"vcs.revision": rev}, "v0.0.0-20261202145900-c80ccf7abcde"},
		{"pseudo-version dirty", "v0.0.0-20261202145900-c80ccf7abcde+dirty", map[string]string{"vcs.revision": rev, "vcs.modified": "true"}, "v0.0.0-20261202145900-c80ccf7abcde+dirty"},
		{"devel with revision", "(devel)", map[string]string{"vcs.revision": rev, "vcs.modified": "false"}, "devel-c80ccf7abcde"},
		{"devel modified", "(devel)", map[string]string{"vcs.revision": rev, "vcs.modified": "true"}, "devel-c80ccf7abcde+dirty"},
		{"devel without vcs", "", nil, "devel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/mailgate/mailgate", Version: tc.main}}
			for k, v := range tc.settings {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: k, Value: v})
			}
			got := formatVersion(bi)
			if got != tc.want {
				t.Errorf("formatVersion = %q, want %q", got, tc.want)
			}
			if n := strings.Count(got, "c80ccf7"); n > 1 {
				t.Errorf("%q names the revision %d times", got, n)
			}
		})
	}
}

func TestVersionCommandNamesGoRelease(t *testing.T) {
	var out strings.Builder
	app := newApp(&out, &out)
	if err := app.Run([]string{"mailgate", "version"}); err != nil {
		t.Fatal(err)
	}
	line := out.String()
	if !strings.HasPrefix(line, "mailgate ") || !strings.Contains(line, "(go") || strings.Count(line, "\n") != 1 {
		t.Errorf("version printed %q, want one line \"mailgate <version> (go1.x)\"", line)
	}
}

// TestConfigCheckChanged: --changed prints only what the file and flags
// changed, like postconf -n, so an admin sees the installation's choices.
func TestConfigCheckChanged(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "x.yaml")
	if err := os.WriteFile(cfg, []byte("relay:\n  listen: 127.0.0.1:2611\ngoogle:\n  client_secret: topsecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := mailgate(t, "config", "check", "--changed", "-c", cfg, "--set", "log.level=debug")
	if code != 0 {
		t.Fatalf("config check --changed = %d\n%s\n%s", code, out, stderr)
	}
	want := "google.client_secret: '********'\nlog.level: debug\nrelay.listen: 127.0.0.1:2611\n"
	if out != want {
		t.Errorf("config check --changed printed\n%s\nwant\n%s", out, want)
	}
}
