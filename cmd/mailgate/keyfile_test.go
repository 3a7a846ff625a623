package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/oauth"
)

// keyFileEnv is an accounts environment whose key file is left to its
// default: next to the configuration file in e.dir.
func keyFileEnv(t *testing.T) (*accountsEnv, string) {
	t.Helper()
	e := newAccountsEnv(t)
	var global []string
	for _, a := range e.global {
		if strings.HasPrefix(a, "secrets.key_file=") {
			global = global[:len(global)-1] // and its --set
			continue
		}
		global = append(global, a)
	}
	cfgFile := filepath.Join(e.dir, "mailgate.yaml")
	if err := os.WriteFile(cfgFile, []byte("log:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STATE_DIRECTORY", "")
	e.global = append(global, "--config", cfgFile)
	return e, filepath.Join(e.dir, "mailgate.key")
}

// An admin who runs the CLI from another directory uses the same key: the
// default key file lives next to the configuration, not in the working
// directory.
func TestKeyFileIndependentOfWorkingDirectory(t *testing.T) {
	e, keyFile := keyFileEnv(t)
	elsewhere := []string{t.TempDir(), t.TempDir()}

	t.Chdir(elsewhere[0])
	e.addAccount("alice@example.com", 0)
	t.Chdir(elsewhere[1])
	e.addAccount("bob@example.com", 0)

	for _, d := range elsewhere {
		if _, err := os.Stat(filepath.Join(d, "mailgate.key")); err == nil {
			t.Errorf("a key file was created in the working directory %s", d)
		}
	}
	box, err := oauth.LoadKey(keyFile)
	if err != nil {
		t.Fatalf("the key next to the configuration: %v", err)
	}
	st := accounts.New(e.redis.Client(t), accounts.Options{Box: box})
	for _, who := range []string{"alice@example.com", "bob@example.com"} {
		if _, err := st.RefreshToken(context.Background(), who); err != nil {
			t.Errorf("refresh token of %s does not open with %s: %v", who, keyFile, err)
		}
	}

	out := e.mustRun("config", "check")
	if !strings.Contains(out, "key file: "+keyFile) {
		t.Errorf("config check does not print the key file %s:\n%s", keyFile, out)
	}
	if out := e.mustRun("status"); !strings.Contains(out, "key file: "+keyFile) {
		t.Errorf("status does not print the key file %s:\n%s", keyFile, out)
	}
}

// With accounts in Redis, a missing key file is a wrong path, not a first
// start: mailgate refuses to create a new key and names the one expected.
func TestNoNewKeyWhileAccountsExist(t *testing.T) {
	e, keyFile := keyFileEnv(t)
	e.addAccount("alice@example.com", 0)
	if err := os.Rename(keyFile, keyFile+".moved"); err != nil {
		t.Fatal(err)
	}

	tok := e.tokenFile("tok2", e.google.IssueRefreshToken("bob@example.com"), 0o600)
	code, out, errOut := e.run("accounts", "add", "bob@example.com", "--refresh-token-file", tok)
	if code != exitConfig || !strings.Contains(errOut, keyFile) || !strings.Contains(errOut, "secrets.key_file") {
		t.Fatalf("accounts add without the key: exit %d, want %d naming secrets.key_file and %s\nstdout: %s\nstderr: %s", code, exitConfig, keyFile, out, errOut)
	}
	if _, err := os.Stat(keyFile); err == nil {
		t.Fatalf("a new key file was created at %s while an account exists", keyFile)
	}
}
