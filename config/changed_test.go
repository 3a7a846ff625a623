package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestChangedListsOnlyNonDefaultsWithSecretsMasked(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mailgate.yaml")
	if err := os.WriteFile(file, []byte("log:\n  level: debug\ngoogle:\n  client_secret: s3cret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	environ := []string{"HOME=" + dir, "MAILGATE_LOG_FORMAT=json"}
	c, err := Load(file, environ)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := c.Changed(file, environ)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(lines, "\n")
	for _, want := range []string{"log.level: debug", "google.client_secret: '" + masked + "'", "log.format: json"} {
		if !strings.Contains(got, want) {
			t.Errorf("Changed() missing %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "s3cret-value") {
		t.Errorf("Changed() shows a secret:\n%s", got)
	}
	if len(lines) != 3 {
		t.Errorf("Changed() = %d lines, want the 3 changed keys only (the default key file is no change):\n%s", len(lines), got)
	}
}

func TestChangedDefaultsAreEmpty(t *testing.T) {
	environ := []string{"HOME=" + t.TempDir()}
	c, err := Load("", environ)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := c.Changed("", environ)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 0 {
		t.Errorf("built-in defaults report changes: %q", lines)
	}
}
