package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/mailgate/mailgate/config"
)

// relayCLI runs mailgate in-process with stdin as the app's input, which
// run does not let a test set.
func relayCLI(t *testing.T, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := newApp(&out, &errOut)
	app.Reader = stdin
	code = runApp(app, append([]string{"mailgate"}, args...), &errOut)
	return code, out.String(), errOut.String()
}

func TestRelayPasswd(t *testing.T) {
	const pw = "correct horse battery staple"
	code, out, stderr := relayCLI(t, strings.NewReader(pw+"\r\nsecond line ignored\n"), "relay", "passwd", "--cost", "5", "--user", "desk")
	if code != 0 {
		t.Fatalf("relay passwd = %d\n%s\n%s", code, out, stderr)
	}
	if strings.Contains(out+stderr, pw) {
		t.Fatalf("relay passwd echoed the password:\n%s\n%s", out, stderr)
	}
	hash, snippet, _ := strings.Cut(out, "\n\n")
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)); err != nil {
		t.Fatalf("printed hash %q does not verify: %v", hash, err)
	}
	if cost, _ := bcrypt.Cost([]byte(hash)); cost != 5 {
		t.Errorf("hash cost = %d, want 5", cost)
	}
	// The snippet is a configuration file as it stands.
	file := filepath.Join(t.TempDir(), "mailgate.yaml")
	os.WriteFile(file, []byte(snippet), 0o600)
	cfg, err := config.Load(file, nil)
	if err != nil {
		t.Fatalf("the printed snippet does not load: %v\n%s", err, snippet)
	}
	if u := cfg.Relay.Users; len(u) != 1 || u[0].Name != "desk" || u[0].PasswordHash != hash {
		t.Errorf("snippet users = %+v, want desk with the hash", u)
	}
	// serve reloads relay users on SIGHUP: no restart needed.
	wantOutput(t, "relay passwd", snippet, "SIGHUP", "systemctl reload mailgate")
	if strings.Contains(snippet, "restart") {
		t.Errorf("relay passwd says to restart serve, but SIGHUP reloads relay users:\n%s", snippet)
	}

	code, out, _ = relayCLI(t, strings.NewReader("short"), "relay", "passwd", "--cost", "4", "--hash-only")
	if code != 0 || bcrypt.CompareHashAndPassword([]byte(strings.TrimSpace(out)), []byte("short")) != nil {
		t.Errorf("--hash-only without a final newline = %d %q", code, out)
	}
}

// TestRelayPasswdWeakWarning words the warning with the right article.
func TestRelayPasswdWeakWarning(t *testing.T) {
	for pw, want := range map[string]string{
		"elevenchars": "warning: an 11-character password is weak",
		"eightchr":    "warning: an 8-character password is weak",
		"short":       "warning: a 5-character password is weak",
	} {
		_, _, stderr := relayCLI(t, strings.NewReader(pw), "relay", "passwd", "--cost", "4", "--hash-only")
		wantOutput(t, "relay passwd stderr", stderr, want)
	}
}

func TestRelayPasswdRefused(t *testing.T) {
	for _, tc := range []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"empty input", "", nil, "no password"},
		{"empty line", "\n", nil, "no password"},
		{"cost too low", "s3cret-s3cret", []string{"--cost", "3"}, "--cost 3"},
		{"too long for bcrypt", strings.Repeat("x", 73), []string{"--cost", "4"}, "72 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := relayCLI(t, strings.NewReader(tc.stdin), append([]string{"relay", "passwd"}, tc.args...)...)
			if code != 1 || out != "" || !strings.Contains(stderr, tc.want) {
				t.Errorf("relay passwd = %d, stdout %q, stderr %q; want 1 and %q", code, out, stderr, tc.want)
			}
		})
	}
}
