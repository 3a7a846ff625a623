// This file is what a server is set up with before Dovecot starts: the
// system users its processes run as, the directory layout and passwd-file,
// dovecot.conf and the oauth2 passdb's file.

package dovecottest

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// ids are the system users Dovecot's processes run as.
type ids struct {
	root     bool
	internal string // default_internal_user: auth, stats, anvil, ...
	group    string // default_internal_group: owns stats-writer and friends
	login    string // default_login_user: imap-login, handles untrusted input
	mailUser string // owner of the mailboxes; userdb uid/gid
	uid, gid int
}

// processUsers picks who runs what. As root (CI containers), Dovecot
// insists on an unprivileged login user ("This process must not be run as
// root") and refuses uid 0 for mail ("userdb returned 0 as uid"), so it
// gets the users its package creates: dovecot for internal processes and
// mail, dovenull for logins. As anyone else, everything runs as the
// current user, Dovecot's documented non-root mode.
func processUsers() (ids, error) {
	if os.Geteuid() == 0 {
		dv, err := user.Lookup("dovecot")
		if err != nil {
			return ids{}, fmt.Errorf("running as root needs the system user 'dovecot' (created by the dovecot-core package): %w", err)
		}
		if _, err := user.Lookup("dovenull"); err != nil {
			return ids{}, fmt.Errorf("running as root needs the system user 'dovenull' (created by the dovecot-core package): %w", err)
		}
		uid, _ := strconv.Atoi(dv.Uid)
		gid, _ := strconv.Atoi(dv.Gid)
		return ids{root: true, internal: "dovecot", group: "dovecot", login: "dovenull", mailUser: "dovecot", uid: uid, gid: gid}, nil
	}
	me, err := user.Current()
	if err != nil {
		return ids{}, fmt.Errorf("current user: %w", err)
	}
	g, err := user.LookupGroupId(me.Gid)
	if err != nil {
		return ids{}, fmt.Errorf("current user's group: %w", err)
	}
	uid, _ := strconv.Atoi(me.Uid)
	gid, _ := strconv.Atoi(me.Gid)
	return ids{internal: me.Username, group: g.Name, login: me.Username, mailUser: me.Username, uid: uid, gid: gid}, nil
}

// prepareDir lays out dir: run/ (base_dir), state/, mail/ (homes) and the
// passwd-file.
func prepareDir(dir string, users []string, id ids) error {
	for _, sub := range []string{"run", "state", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	var pw strings.Builder
	for _, u := range users {
		pw.WriteString(passwdLine(u))
	}
	// 0644: the auth process runs as the internal user, and the password
	// is a published test constant.
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(pw.String()), 0o644); err != nil {
		return err
	}
	if id.root {
		// The mail processes (uid dovecot) must enter dir and own mail/.
		if err := os.Chmod(dir, 0o711); err != nil {
			return err
		}
		if err := os.Chown(filepath.Join(dir, "mail"), id.uid, id.gid); err != nil {
			return err
		}
	}
	return nil
}

// passwdLine is user's passwd-file entry:
// user:password:uid:gid:gecos:home:shell:extra, where uid, gid and home
// come from the userdb's default_fields.
func passwdLine(user string) string {
	return fmt.Sprintf("%s:{PLAIN}%s::::::\n", user, Password)
}

func validUser(u string) error {
	if u == "" || strings.ContainsAny(u, ":/ \t\r\n\"\\%") {
		return fmt.Errorf("user %q cannot go in a passwd-file", u)
	}
	return nil
}

// config returns dovecot.conf. Every path is inside dir, so nothing from
// /etc/dovecot is read and two servers never share a socket. Settings are
// quoted, but passdb/userdb args are split on spaces and cannot be: a
// TMPDIR with a space in it would break them.
func config(dir string, port int, opts Options, id ids) string {
	q := strconv.Quote
	mechs := "plain login"
	if opts.TokeninfoURL != "" {
		mechs += " xoauth2 oauthbearer"
	}
	lines := []string{
		"# Written by internal/dovecottest; see config() there.",
		"base_dir = " + q(filepath.Join(dir, "run")),
		"state_dir = " + q(filepath.Join(dir, "state")),
		"instance_name = dovecottest-" + strconv.Itoa(port),
		"log_path = " + q(filepath.Join(dir, "dovecot.log")),
		"protocols = imap",
		"listen = 127.0.0.1",
		// Loopback only: no TLS, and plaintext auth allowed on it (by
		// default Dovecot refuses LOGIN/PLAIN without TLS from non-local
		// addresses; 127.0.0.1 is "secured" anyway, this makes it explicit).
		"ssl = no",
		"disable_plaintext_auth = no",
		"auth_mechanisms = " + mechs,
		// Log why a login failed (unknown user, bad token), not only that
		// it did: the log is printed when a test fails.
		"auth_verbose = yes",
		// A failed login is answered after auth_failure_delay (2s), and
		// the next attempts from the same IP after an anvil penalty that
		// doubles up to 15s (turned off below). Every test client is
		// 127.0.0.1, so tests of rejected tokens would take minutes.
		// Options.Extra can put the delay back.
		"auth_failure_delay = 0",
		"default_internal_user = " + id.internal,
		"default_internal_group = " + id.group,
		"default_login_user = " + id.login,
		// Dovecot refuses mail uids below 500 by default; Debian's
		// dovecot user is a system user (uid ~100).
		"first_valid_uid = " + strconv.Itoa(min(id.uid, 500)),
		// sdbox, not maildir: with maildir an APPEND costs time in
		// proportion to the mailbox (10,000 APPENDs of 10 KB took over
		// three minutes; with sdbox, 15s). Options.Extra can choose
		// "mail_location = maildir:~/Maildir".
		"mail_location = sdbox:~/sdbox",
		// Nothing here needs to survive a crash: skip fsync.
		"mail_fsync = never",
		// Gmail allows 15 simultaneous IMAP connections per account;
		// Dovecot's default is 10 per user and IP, and every test client
		// comes from 127.0.0.1.
		"mail_max_userip_connections = 15",
		"",
		"passdb {",
		"  driver = passwd-file",
		"  mechanisms = plain login",
		"  args = scheme=PLAIN username_format=%u " + filepath.Join(dir, "passwd"),
		"}",
	}
	if opts.TokeninfoURL != "" {
		lines = append(lines,
			"passdb {",
			"  driver = oauth2",
			"  mechanisms = xoauth2 oauthbearer",
			"  args = "+filepath.Join(dir, "oauth2.conf.ext"),
			"}",
		)
	}
	lines = append(lines,
		// The passwd-file is also the userdb, so an access token for an
		// address that has no mailbox here fails like an unknown user.
		"userdb {",
		"  driver = passwd-file",
		"  args = username_format=%u "+filepath.Join(dir, "passwd"),
		fmt.Sprintf("  default_fields = uid=%d gid=%d home=%s/%%u", id.uid, id.gid, filepath.Join(dir, "mail")),
		"}",
		"",
		"service imap-login {",
		"  inet_listener imap {",
		"    address = 127.0.0.1",
		"    port = "+strconv.Itoa(port),
		"  }",
		"  inet_listener imaps {",
		"    port = 0",
		"  }",
		// chroot needs root; without it the non-root mode works too.
		"  chroot =",
		"}",
		"service anvil {",
		"  chroot =",
		// No socket, no penalty (wiki: Authentication.Penalty).
		"  unix_listener anvil-auth-penalty {",
		"    mode = 0",
		"  }",
		"}",
		"",
	)
	lines = append(lines, opts.Extra...)
	return strings.Join(lines, "\n") + "\n"
}

// oauth2Config is the oauth2 passdb's file, as Dovecot's documentation
// shows for Google: tokeninfo only (no introspection), the login name from
// the "email" field, which must equal the user logging in. Dovecot 2.3
// judges a token by the HTTP status alone: 2xx valid, 4xx invalid; it
// ignores expires_in, even "0".
func oauth2Config(tokeninfoURL string) string {
	return strings.Join([]string{
		"tokeninfo_url = " + tokeninfoURL,
		"username_attribute = email",
		"timeout_msecs = 5000",
	}, "\n") + "\n"
}
