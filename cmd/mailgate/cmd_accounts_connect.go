// This file is how an account gets its refresh token: accounts connect
// (browser consent), add (a token file, checked with Google) and reconnect
// (either).

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/oauth"
)

// consentTimeout bounds the browser flow: long enough to find the right
// Google account, short enough that a forgotten terminal frees its port.
const consentTimeout = 5 * time.Minute

// verifyTimeout bounds the token and userinfo calls that check a token.
const verifyTimeout = 30 * time.Second

// accountsConnect serves connect, add and reconnect: they differ only in
// where the token comes from and whether the account must exist already.
func accountsConnect(c *cli.Context) error {
	verb := c.Command.Name
	email, err := emailArg(c)
	if err != nil {
		return err
	}
	if verb == "add" && c.String("refresh-token-file") == "" {
		return cli.Exit("usage: mailgate accounts add EMAIL --refresh-token-file FILE (or `mailgate accounts connect EMAIL` for the browser consent)", 1)
	}
	kind := accounts.Kind("")
	if c.String("kind") != "" {
		if kind, err = accounts.ParseKind(c.String("kind")); err != nil {
			return cli.Exit(err, 1)
		}
	}
	if n := c.Int("import-recent"); n < 0 {
		return cli.Exit(fmt.Sprintf("--import-recent=%d: want 0 (import nothing) or a number of recent mails such as 50", n), 1)
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	path := c.String("refresh-token-file")
	// Everything that can fail locally fails before the browser dance.
	if cfg.Google.ClientID == "" && (path == "" || !c.Bool("skip-verify")) {
		return cli.Exit("google.client_id is not set: create an OAuth client of type \"Desktop app\" in Google Cloud Console and set google.client_id and google.client_secret (see README); a refresh token works only with the client it was issued to", exitConfig)
	}
	// Google's token endpoint refuses a Desktop app's code or refresh token
	// without the client's secret: say so now, not after the consent.
	if cfg.Google.ClientSecret == "" && (path == "" || !c.Bool("skip-verify")) {
		return cli.Exit("google.client_secret is not set: copy the client secret of the OAuth client google.client_id from Google Cloud Console (APIs & Services > Credentials) into google.client_secret (see README)", exitConfig)
	}
	if p := c.Int("listen-port"); p < 0 || p > 65535 {
		return cli.Exit(fmt.Sprintf("--listen-port=%d: want a TCP port, 1 to 65535 (or 0 for a free one)", p), 1)
	}
	st, rdb, err := openAccounts(c.Context, cfg, true)
	if err != nil {
		return err
	}
	defer rdb.Close()
	prev, err := st.Get(c.Context, email)
	switch {
	case errors.Is(err, accounts.ErrNotFound):
		if verb == "reconnect" {
			return cli.Exit(fmt.Sprintf("no account %s: connect it first with `mailgate accounts connect %s`", email, email), 1)
		}
		prev = nil
	case err != nil:
		return err
	}

	var token string
	if path != "" {
		token, err = tokenFromFile(c, cfg, email, path)
	} else {
		token, err = tokenFromBrowser(c, cfg, email)
	}
	if err != nil {
		return err
	}

	reconnected, err := st.Connect(c.Context, accounts.Account{Email: email, Kind: kind, ImportRecent: c.Int("import-recent")}, token)
	if err != nil {
		return err
	}
	a, err := st.Get(c.Context, email)
	if err != nil {
		return err
	}
	w := c.App.Writer
	if !reconnected {
		fmt.Fprintf(w, "Connected %s (%s): it is now a support address.\n", a.Email, a.Kind)
		if a.ImportRecent > 0 {
			fmt.Fprintf(w, "The initial import of the %d most recent mails (read or unread) runs at the next fetch, with helpdesk triggers suppressed:\n  mailgate fetch --once %s   (or a running `mailgate serve` picks it up)\n", a.ImportRecent, a.Email)
		} else {
			fmt.Fprintf(w, "No existing mail is imported: only mail arriving from now on becomes tickets, from the next fetch on:\n  mailgate fetch --once %s   (or a running `mailgate serve` picks it up)\n", a.Email)
		}
		return nil
	}
	switch {
	case prev != nil && prev.State == accounts.StateDisconnected:
		fmt.Fprintf(w, "Reconnected %s (%s): connected again and a support address again.\n", a.Email, a.Kind)
	case prev != nil && prev.Warning != "":
		fmt.Fprintf(w, "Reconnected %s (%s): warning cleared (was: %s).\n", a.Email, a.Kind, prev.Warning)
	default:
		fmt.Fprintf(w, "Reconnected %s (%s) with a new token.\n", a.Email, a.Kind)
	}
	if cur, err := st.Cursor(c.Context, email); err == nil && cur.LastUID > 0 {
		fmt.Fprintf(w, "Fetching resumes after UID %d: mail already imported is not imported again; unread mail that arrived meanwhile becomes tickets at the next fetch.\n", cur.LastUID)
	} else {
		fmt.Fprintln(w, "Mail already imported is not imported again; unread mail that arrived meanwhile becomes tickets at the next fetch.")
	}
	if c.IsSet("import-recent") && c.Int("import-recent") != a.ImportRecent {
		fmt.Fprintf(c.App.ErrWriter, "note: --import-recent ignored: %s was connected before, and its initial import choice (%d) stands\n", a.Email, a.ImportRecent)
	}
	return nil
}

// tokenFromBrowser runs the OAuth consent (PKCE, loopback redirect) and
// returns the refresh token, refusing one for another account than email:
// the classic mistake of consenting in a browser signed in to another
// Google account.
func tokenFromBrowser(c *cli.Context, cfg *config.Config, email string) (string, error) {
	w := c.App.Writer
	ctx, cancel := context.WithTimeout(c.Context, consentTimeout)
	defer cancel()
	res, err := oauth.Consent(ctx, googleOAuth(cfg), oauth.ConsentOptions{
		Email:       email,
		UserinfoURL: cfg.Google.UserinfoURL,
		ListenAddr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Int("listen-port"))),
		OpenURL: func(u string) {
			fmt.Fprintf(w, "Open this URL in a browser signed in to %s:\n  %s\n", email, u)
			if p := c.Int("listen-port"); p > 0 {
				fmt.Fprintf(w, "(From another machine, forward the port first: ssh -L %d:127.0.0.1:%d THIS-SERVER)\n", p, p)
			}
			if !c.Bool("no-browser") {
				openBrowser(u)
			}
			fmt.Fprintf(w, "Waiting up to %s for the consent...\n", consentTimeout)
		},
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("%w: run the command again and open the URL within %s", err, consentTimeout)
		}
		return "", err
	}
	fmt.Fprintf(w, "Google authorised: %s\n", res.Email)
	if !strings.EqualFold(res.Email, email) {
		return "", wrongAccount(res.Email, email)
	}
	return res.Token.RefreshToken, nil
}

// tokenFromFile reads a refresh token and, unless --skip-verify, checks
// with Google that it works and belongs to email.
func tokenFromFile(c *cli.Context, cfg *config.Config, email, path string) (string, error) {
	token, err := readTokenFile(path, c.App.ErrWriter)
	if err != nil {
		return "", err
	}
	if c.Bool("skip-verify") {
		fmt.Fprintf(c.App.Writer, "Token not verified (--skip-verify): the first fetch will tell whether it works for %s.\n", email)
		return token, nil
	}
	ctx, cancel := context.WithTimeout(c.Context, verifyTimeout)
	defer cancel()
	// The token endpoint may rotate the refresh token while we verify it;
	// then the one in the file is dead and the new one must be stored.
	src := oauth.NewSource(googleOAuth(cfg), token, func(_ context.Context, rotated string) error {
		token = rotated
		return nil
	})
	at, err := src.Token(ctx)
	if errors.Is(err, oauth.ErrInvalidGrant) {
		return "", fmt.Errorf("Google refused the refresh token in %s (invalid_grant): it was revoked, or it expired (after 7 days when the OAuth app is in \"testing\" status), or the password changed. Get a new token, or use `mailgate accounts connect %s` to consent in a browser. Nothing was stored: %w", path, email, err)
	}
	if err != nil {
		return "", fmt.Errorf("verify the refresh token at %s: %w (--skip-verify stores it without this check)", cfg.Google.TokenURL, err)
	}
	actual, err := oauth.Email(ctx, nil, cfg.Google.UserinfoURL, at.AccessToken)
	if err != nil {
		return "", fmt.Errorf("learn which account the token belongs to (it needs the \"email\" scope; --skip-verify stores it without this check): %w", err)
	}
	fmt.Fprintf(c.App.Writer, "Google authorised: %s\n", actual)
	if !strings.EqualFold(actual, email) {
		return "", fmt.Errorf("the refresh token in %s belongs to %s, not %s: nothing was stored", path, actual, email)
	}
	return token, nil
}

func wrongAccount(actual, want string) error {
	return fmt.Errorf("You signed in as %s but asked to connect %s: sign in to %s in the browser (or use a private window) and run the command again. Nothing was stored", actual, want, want)
}

// readTokenFile returns the file's content without surrounding space. A
// file others can read only gets a warning: it is the admin's file, and
// the token is stored encrypted once we are done.
func readTokenFile(path string, warn io.Writer) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("refresh token file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(warn, "warning: %s is accessible by group or others (mode %#o): chmod 600 it, or delete it once the account is connected (mailgate keeps the token encrypted)\n", path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", fmt.Errorf("refresh token file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	switch {
	case token == "":
		return "", fmt.Errorf("refresh token file %s is empty", path)
	case strings.ContainsAny(token, " \t\r\n"):
		return "", fmt.Errorf("refresh token file %s holds more than one word: want only the refresh token", path)
	}
	return token, nil
}

// openBrowser tries to show url in the desktop's browser, quietly: on a
// headless server it fails, and the printed URL is the way.
func openBrowser(url string) {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.Command("xdg-open", url)
	}
	if cmd.Start() == nil {
		go cmd.Wait()
	}
}
