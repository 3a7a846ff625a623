package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/internal/freeport"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/oauth"
)

// syncBuffer lets a test read what a command running in another goroutine
// has printed so far.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// accountsEnv is a Redis and a fake Google for one test, and the global
// flags that point mailgate at them.
type accountsEnv struct {
	t      *testing.T
	redis  *redistest.Server
	google *fakeoauth.Server
	dir    string
	global []string
}

// newAccountsEnv starts the Redis (with redisConf lines such as
// "appendonly yes") and the fake Google.
func newAccountsEnv(t *testing.T, redisConf ...string) *accountsEnv {
	t.Helper()
	e := &accountsEnv{t: t, redis: redistest.Start(t, redisConf...), google: fakeoauth.New(), dir: t.TempDir()}
	t.Cleanup(e.google.Close)
	e.global = []string{"mailgate", "--redis-url", e.redis.URL}
	for _, kv := range []string{
		"google.client_id=" + fakeoauth.ClientID,
		"google.client_secret=" + fakeoauth.ClientSecret,
		"google.auth_url=" + e.google.URL + "/auth",
		"google.token_url=" + e.google.URL + "/token",
		"google.userinfo_url=" + e.google.UserinfoURL(),
		"secrets.key_file=" + filepath.Join(e.dir, "key"),
	} {
		e.global = append(e.global, "--set", kv)
	}
	return e
}

// mailgate runs the binary's CLI with args after the global flags.
func (e *accountsEnv) mailgate(stdout, stderr io.Writer, args ...string) int {
	return run(append(append([]string{}, e.global...), args...), stdout, stderr)
}

func (e *accountsEnv) run(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	var out, errOut bytes.Buffer
	code = e.mailgate(&out, &errOut, args...)
	return code, out.String(), errOut.String()
}

// mustRun runs a command that must succeed and returns its stdout.
func (e *accountsEnv) mustRun(args ...string) string {
	e.t.Helper()
	code, out, errOut := e.run(args...)
	if code != 0 {
		e.t.Fatalf("mailgate %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (e *accountsEnv) list() []accounts.Account {
	e.t.Helper()
	out := e.mustRun("accounts", "list", "--json")
	var list []accounts.Account
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		e.t.Fatalf("accounts list --json: %v\n%s", err, out)
	}
	return list
}

func (e *accountsEnv) tokenFile(name, token string, mode os.FileMode) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(token+"\n"), mode); err != nil {
		e.t.Fatal(err)
	}
	os.Chmod(p, mode) // past the umask
	return p
}

// addAccount connects email with `accounts add` and a fresh refresh token
// from the fake Google, importing its importRecent most recent mails.
func (e *accountsEnv) addAccount(email string, importRecent int) {
	e.t.Helper()
	tok := e.tokenFile("tok", e.google.IssueRefreshToken(email), 0o600)
	e.mustRun("accounts", "add", email, "--refresh-token-file", tok, "--import-recent", strconv.Itoa(importRecent))
}

// store opens the accounts as the CLI left them, with its key file.
func (e *accountsEnv) store() *accounts.Store {
	e.t.Helper()
	box, err := oauth.LoadOrCreateKey(filepath.Join(e.dir, "key"))
	if err != nil {
		e.t.Fatal(err)
	}
	return accounts.New(e.redis.Client(e.t), accounts.Options{Box: box})
}

func TestAccountsAddList(t *testing.T) {
	e := newAccountsEnv(t)
	token := e.google.IssueRefreshToken("alice@example.com")
	f := e.tokenFile("alice.token", token, 0o600)

	code, out, errOut := e.run("accounts", "add", "Alice@Example.com", "--refresh-token-file", f)
	if code != 0 || !strings.Contains(out, "Google authorised: alice@example.com") || !strings.Contains(out, "Connected alice@example.com (gmail)") {
		t.Fatalf("accounts add: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if !strings.Contains(out, "50 most recent mails") || errOut != "" {
		t.Errorf("accounts add did not say what happens next, or warned:\nstdout: %s\nstderr: %s", out, errOut)
	}

	// Flags before EMAIL work too; a token file others can read is
	// accepted with a warning.
	bob := e.tokenFile("bob.token", e.google.IssueRefreshToken("bob@example.com"), 0o644)
	code, out, errOut = e.run("accounts", "add", "--kind", "workspace", "--import-recent=0", "--refresh-token-file", bob, "bob@example.com")
	if code != 0 || !strings.Contains(errOut, "warning: "+bob+" is accessible by group or others") {
		t.Fatalf("accounts add bob: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}

	table := e.mustRun("accounts", "list")
	wantOutput(t, "accounts list", table,
		"EMAIL", "WARNING",
		"alice@example.com", "gmail", "connected", "never", "import of 50 pending",
		"bob@example.com", "workspace",
	)

	jsonOut := e.mustRun("accounts", "list", "--json")
	if strings.Contains(jsonOut, token) || strings.Contains(jsonOut, "token") {
		t.Fatalf("accounts list --json exposes a token:\n%s", jsonOut)
	}
	list := e.list()
	if len(list) != 2 || list[0].Email != "alice@example.com" || list[0].State != accounts.StateConnected ||
		list[0].ImportRecent != 50 || list[1].Kind != accounts.KindWorkspace || list[1].ImportRecent != 0 {
		t.Fatalf("accounts list --json = %+v", list)
	}

	// At rest the token is sealed; with the key file it opens.
	rdb := e.redis.Client(t)
	if raw := rdb.HGet(context.Background(), "mailgate:account:alice@example.com", "token").Val(); strings.Contains(raw, token) {
		t.Fatal("the refresh token is stored in clear in Redis")
	}
	if got, err := e.store().RefreshToken(context.Background(), "alice@example.com"); err != nil || got != token {
		t.Fatalf("stored token = %q, %v, want the one from the file", got, err)
	}
}

func TestAccountsAddRefused(t *testing.T) {
	e := newAccountsEnv(t)
	revoked := e.google.IssueRefreshToken("alice@example.com")
	e.google.Revoke(revoked)
	for _, c := range []struct {
		name, token string
		want        []string
	}{
		{"another account", e.google.IssueRefreshToken("bob@example.com"),
			[]string{"belongs to bob@example.com, not alice@example.com", "nothing was stored"}},
		{"revoked", revoked,
			[]string{"Google refused the refresh token", "invalid_grant", "revoked", "accounts connect alice@example.com", "Nothing was stored"}},
		{"empty file", "", []string{"is empty"}},
	} {
		f := e.tokenFile("t", c.token, 0o600)
		code, out, errOut := e.run("accounts", "add", "alice@example.com", "--refresh-token-file", f)
		if code == 0 {
			t.Errorf("%s: accounts add succeeded:\n%s", c.name, out)
		}
		for _, w := range c.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", c.name, w, errOut)
			}
		}
		if list := e.list(); len(list) != 0 {
			t.Fatalf("%s: refused add stored %+v", c.name, list)
		}
	}
	if code, _, errOut := e.run("accounts", "add", "alice@example.com"); code == 0 || !strings.Contains(errOut, "--refresh-token-file") {
		t.Errorf("accounts add without a token file: exit %d, stderr %s", code, errOut)
	}
}

func TestAccountsAddRotatedWhileVerifying(t *testing.T) {
	e := newAccountsEnv(t)
	old := e.google.IssueRefreshToken("alice@example.com")
	e.google.SetRotate(true) // the check kills the token in the file
	e.mustRun("accounts", "add", "alice@example.com", "--refresh-token-file", e.tokenFile("t", old, 0o600))
	got, err := e.store().RefreshToken(context.Background(), "alice@example.com")
	if err != nil || got == old {
		t.Fatalf("stored token = %q, %v: want the rotated one, not the dead %q", got, err, old)
	}
}

func TestAccountsAddSkipVerify(t *testing.T) {
	e := newAccountsEnv(t)
	f := e.tokenFile("t", "1//not-checked", 0o600)
	out := e.mustRun("accounts", "add", "alice@example.com", "--refresh-token-file", f, "--skip-verify")
	if n := e.google.TokenRequests(); n != 0 || !strings.Contains(out, "not verified") {
		t.Fatalf("--skip-verify: %d token requests, stdout %s", n, out)
	}
	if list := e.list(); len(list) != 1 {
		t.Fatalf("accounts list = %+v", list)
	}
}

func TestAccountsDisconnectReconnect(t *testing.T) {
	ctx := context.Background()
	e := newAccountsEnv(t)
	e.mustRun("accounts", "add", "alice@example.com", "--refresh-token-file", e.tokenFile("t", e.google.IssueRefreshToken("alice@example.com"), 0o600))
	st := e.store()
	st.SetCursor(ctx, "alice@example.com", accounts.Cursor{UIDValidity: 3, LastUID: 77})
	st.RecordPoll(ctx, "alice@example.com", 12)

	out := e.mustRun("accounts", "disconnect", "alice@example.com")
	if !strings.Contains(out, "Disconnected alice@example.com") {
		t.Errorf("disconnect said: %s", out)
	}
	list := e.list()
	if len(list) != 1 || list[0].State != accounts.StateDisconnected || list[0].Warning == "" {
		t.Fatalf("after disconnect: %+v", list)
	}
	if table := e.mustRun("accounts", "list"); !strings.Contains(table, "disconnected") {
		t.Errorf("accounts list does not show the disconnect:\n%s", table)
	}
	if _, err := st.RefreshToken(ctx, "alice@example.com"); err == nil {
		t.Error("the token survived the disconnect")
	}

	// Revoked authorisation shows a warning; a reconnect clears it and
	// keeps the position, so nothing is imported twice.
	st.SetError(ctx, "alice@example.com", "Google refused the token: reconnect the account", oauth.ErrInvalidGrant)
	fresh := e.google.IssueRefreshToken("alice@example.com")
	out = e.mustRun("accounts", "reconnect", "alice@example.com", "--refresh-token-file", e.tokenFile("t2", fresh, 0o600))
	if !strings.Contains(out, "Reconnected alice@example.com") || !strings.Contains(out, "after UID 77") {
		t.Errorf("reconnect said: %s", out)
	}
	list = e.list()
	if list[0].State != accounts.StateConnected || list[0].Warning != "" || list[0].Imported != 12 {
		t.Fatalf("after reconnect: %+v", list[0])
	}
	if c, _ := st.Cursor(ctx, "alice@example.com"); c.LastUID != 77 {
		t.Fatalf("reconnect lost the cursor: %+v", c)
	}

	for _, args := range [][]string{
		{"accounts", "reconnect", "nobody@example.com", "--refresh-token-file", e.tokenFile("t3", fresh, 0o600)},
		{"accounts", "disconnect", "nobody@example.com"},
		{"accounts", "disconnect", "not-an-address"},
		{"accounts", "disconnect"},
	} {
		if code, _, errOut := e.run(args...); code == 0 || errOut == "" {
			t.Errorf("mailgate %s: exit %d, stderr %q; want an error", strings.Join(args, " "), code, errOut)
		}
	}
}

var consentURL = regexp.MustCompile(`(?m)^  (http://\S+)$`)

// connect runs `accounts connect` as a user would: it waits for the URL
// the command prints and opens it (the fake approves at once), and returns
// the command's exit code and output.
func (e *accountsEnv) connect(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- e.mailgate(&out, &errOut, append([]string{"accounts", "connect", "--no-browser"}, args...)...)
	}()
	deadline := time.After(10 * time.Second)
	for {
		if m := consentURL.FindStringSubmatch(out.String()); m != nil {
			resp, err := http.Get(m[1]) // follows the redirect to the loopback listener
			if err != nil {
				e.t.Fatalf("open the consent URL: %v", err)
			}
			resp.Body.Close()
			break
		}
		select {
		case code := <-done:
			return code, out.String(), errOut.String()
		case <-deadline:
			e.t.Fatalf("accounts connect printed no URL:\n%s\n%s", out.String(), errOut.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case code = <-done:
	case <-time.After(10 * time.Second):
		e.t.Fatalf("accounts connect did not finish after the consent:\n%s\n%s", out.String(), errOut.String())
	}
	return code, out.String(), errOut.String()
}

func TestAccountsConnectBrowser(t *testing.T) {
	e := newAccountsEnv(t)
	code, out, errOut := e.connect("alice@example.com", "--import-recent=0")
	if code != 0 {
		t.Fatalf("accounts connect: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	wantOutput(t, "stdout", out,
		"Open this URL in a browser signed in to alice@example.com:",
		"Google authorised: alice@example.com",
		"Connected alice@example.com",
		"No existing mail is imported",
	)
	auth := e.google.LastAuthRequest()
	if auth.Get("login_hint") != "alice@example.com" || auth.Get("code_challenge_method") != "S256" {
		t.Errorf("consent request = %v", auth)
	}
	list := e.list()
	if len(list) != 1 || list[0].State != accounts.StateConnected || list[0].ImportRecent != 0 {
		t.Fatalf("after connect: %+v", list)
	}
	if tok, err := e.store().RefreshToken(context.Background(), "alice@example.com"); err != nil || tok == "" {
		t.Fatalf("stored token = %q, %v", tok, err)
	}

	// connect on a known account is a reconnect through the browser.
	e.store().SetError(context.Background(), "alice@example.com", "revoked", oauth.ErrInvalidGrant)
	code, out, _ = e.connect("alice@example.com")
	if code != 0 || !strings.Contains(out, "Reconnected alice@example.com") || !strings.Contains(out, "warning cleared (was: revoked)") {
		t.Fatalf("connect again: exit %d\n%s", code, out)
	}
}

func TestAccountsConnectWrongAccount(t *testing.T) {
	e := newAccountsEnv(t)
	e.google.SetSignedIn("bob@example.com") // the browser is signed in to another account
	code, out, errOut := e.connect("alice@example.com")
	if code == 0 {
		t.Fatalf("connect as the wrong account succeeded:\n%s", out)
	}
	if !strings.Contains(out, "Google authorised: bob@example.com") ||
		!strings.Contains(errOut, "You signed in as bob@example.com but asked to connect alice@example.com: sign in to alice@example.com in the browser (or use a private window)") {
		t.Fatalf("wrong-account connect:\nstdout: %s\nstderr: %s", out, errOut)
	}
	if list := e.list(); len(list) != 0 {
		t.Fatalf("wrong-account connect stored %+v", list)
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.redis.Addr})
	defer rdb.Close()
	if keys := rdb.Keys(context.Background(), "*").Val(); len(keys) != 0 {
		t.Fatalf("wrong-account connect left keys %v", keys)
	}
}

func TestAccountsConnectDenied(t *testing.T) {
	e := newAccountsEnv(t)
	e.google.SetDeny(true) // the user clicked Cancel
	code, _, errOut := e.connect("alice@example.com")
	if code == 0 || !strings.Contains(errOut, "access_denied") {
		t.Fatalf("denied consent: exit %d, stderr %s", code, errOut)
	}
}

func TestAccountsConnectNoClient(t *testing.T) {
	e := newAccountsEnv(t)
	e.global = append(e.global, "--set", "google.client_id=")
	code, _, errOut := e.run("accounts", "connect", "alice@example.com", "--no-browser")
	if code != exitConfig || !strings.Contains(errOut, "google.client_id is not set") {
		t.Fatalf("connect without a client: exit %d, stderr %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "key")); err == nil {
		t.Error("a failed connect created the key file")
	}
	// A help flag after EMAIL is not taken for a request to connect.
	if code, _, errOut := e.run("accounts", "add", "alice@example.com", "-h"); code == 0 || !strings.Contains(errOut, "--help lists the flags") {
		t.Errorf("accounts add EMAIL -h: exit %d, stderr %s", code, errOut)
	}
}

// TestAccountsConnectListenPort: Google's redirect comes to the port the
// admin chose (and forwarded with ssh -L), and the URL is only printed.
func TestAccountsConnectListenPort(t *testing.T) {
	e := newAccountsEnv(t)
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := e.connect("alice@example.com", "--import-recent=0", "--listen-port", strconv.Itoa(port))
	if code != 0 {
		t.Fatalf("accounts connect --listen-port: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	want := fmt.Sprintf("http://127.0.0.1:%d/callback", port)
	if got := e.google.LastAuthRequest().Get("redirect_uri"); got != want {
		t.Errorf("redirect_uri = %q, want %q", got, want)
	}
	wantOutput(t, "stdout", out, fmt.Sprintf("ssh -L %d:127.0.0.1:%d", port, port), "Connected alice@example.com")

	code, _, errOut = e.run("accounts", "connect", "bob@example.com", "--no-browser", "--listen-port", "70000")
	if code == 0 || !strings.Contains(errOut, "--listen-port=70000") {
		t.Errorf("--listen-port 70000: exit %d, stderr %q", code, errOut)
	}
}

// TestAccountsConnectNoSecret: a client id without its secret is refused
// at once, exit 2 naming the key, before any browser or listener.
func TestAccountsConnectNoSecret(t *testing.T) {
	e := newAccountsEnv(t)
	e.global = append(e.global, "--set", "google.client_secret=")
	start := time.Now()
	code, out, errOut := e.run("accounts", "connect", "alice@example.com", "--no-browser")
	if code != exitConfig || !strings.Contains(errOut, "google.client_secret is not set") {
		t.Fatalf("connect without a secret: exit %d, stderr %q; want %d naming google.client_secret", code, errOut, exitConfig)
	}
	if strings.Contains(out, "Open this URL") || time.Since(start) > 5*time.Second {
		t.Errorf("connect without a secret started the consent (%s):\n%s", time.Since(start), out)
	}
	tok := e.tokenFile("tok", e.google.IssueRefreshToken("alice@example.com"), 0o600)
	if code, _, errOut = e.run("accounts", "add", "alice@example.com", "--refresh-token-file", tok); code != exitConfig || !strings.Contains(errOut, "google.client_secret") {
		t.Errorf("add without a secret: exit %d, stderr %q", code, errOut)
	}
}
