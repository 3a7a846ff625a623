package config

import (
	"os"
	"path/filepath"
	"testing"
)

// Every path in the file is taken from the file's directory, whatever the
// working directory of the command.
func TestPathsFromConfigDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mailgate.yaml")
	yaml := "secrets: {key_file: keys/mg.key}\ngoogle: {ca_file: ca.pem}\n" +
		"relay: {tls_cert: tls/cert.pem, tls_key: tls/key.pem}\n" +
		"dkim:\n  keys:\n    - {domain: example.com, selector: s1, algorithm: rsa, private_key_file: /abs/dkim.pem}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for key, got := range map[string]string{
		filepath.Join(dir, "keys/mg.key"):  c.Secrets.KeyFile,
		filepath.Join(dir, "ca.pem"):       c.Google.CAFile,
		filepath.Join(dir, "tls/cert.pem"): c.Relay.TLSCert,
		filepath.Join(dir, "tls/key.pem"):  c.Relay.TLSKey,
		"/abs/dkim.pem":                    c.DKIM.Keys[0].PrivateKeyFile,
	} {
		if got != key {
			t.Errorf("got %q, want %q", got, key)
		}
	}
}

func TestDefaultKeyFileHome(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "mailgate.yaml")
	for _, tt := range []struct {
		name, configFile string
		environ          []string
		want             string
	}{
		{"systemd", cfgFile, []string{"STATE_DIRECTORY=/var/lib/mailgate:/var/lib/other", "HOME=/home/a"}, "/var/lib/mailgate/mailgate.key"},
		{"next to the config", cfgFile, []string{"HOME=/home/a"}, filepath.Join(dir, "mailgate.key")},
		{"no config file", "", []string{"HOME=/home/a"}, "/home/a/.local/state/mailgate/mailgate.key"},
	} {
		c := Defaults()
		c.ResolvePaths(tt.configFile, tt.environ)
		if c.Secrets.KeyFile != tt.want {
			t.Errorf("%s: key file %q, want %q", tt.name, c.Secrets.KeyFile, tt.want)
		}
	}
}
