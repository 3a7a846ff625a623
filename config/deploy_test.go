package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitAndREADMEAgreeOnKeyFile: the systemd unit, the default key file
// and the README's install steps name one key file and one binary path, so
// serve and the admin's commands use the same key.
func TestUnitAndREADMEAgreeOnKeyFile(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "deploy", "mailgate.service"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var stateDir, binary string
	for _, line := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(line, "StateDirectory="); ok {
			stateDir = filepath.Join("/var/lib", v)
		}
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			binary, _, _ = strings.Cut(v, " ")
		}
		if strings.HasPrefix(line, "Environment=") && strings.Contains(line, "MAILGATE_SECRETS_KEY_FILE") {
			t.Errorf("the unit overrides the key file, so the YAML's secrets.key_file is ignored under systemd: %s", line)
		}
	}
	if stateDir == "" || binary == "" {
		t.Fatalf("unit lacks StateDirectory= or ExecStart=")
	}
	c := Defaults()
	c.ResolvePaths("/etc/mailgate/mailgate.yaml", []string{"STATE_DIRECTORY=" + stateDir})
	for _, want := range []string{"secrets.key_file: " + c.Secrets.KeyFile, binary, "-o mailgate -g mailgate " + stateDir} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("README's install steps lack %q (from deploy/mailgate.service)", want)
		}
	}
}
