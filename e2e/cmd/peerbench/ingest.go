package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/internal/dovecottest"
	"github.com/mailgate/mailgate/internal/mgproc"
)

// mbsync copies the whole mailbox from Dovecot into a fresh Maildir under
// base, with FSync yes or no, and times it from the process's start to
// its exit (login included). The Maildir is removed afterwards.
func (w *world) mbsync(base string, fsync bool) (sample, error) {
	dir, err := os.MkdirTemp(base, "mbsync-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(dir)
	maildir := filepath.Join(dir, "Maildir")
	if err := os.Mkdir(maildir, 0o700); err != nil { // mbsync makes INBOX, not its parent
		return sample{}, err
	}
	host, port, _ := strings.Cut(w.dovecot.Addr(), ":")
	yesNo := map[bool]string{true: "yes", false: "no"}[fsync]
	// LOGIN over plain loopback, as mailgate's XOAUTH2 is; AuthMechs *
	// would leave out every mechanism that sends a password in clear.
	conf := strings.Join([]string{
		"FSync " + yesNo,
		"",
		"IMAPAccount far",
		"Host " + host,
		"Port " + port,
		"User " + mailbox,
		"Pass " + dovecottest.Password,
		"SSLType None",
		"AuthMechs LOGIN",
		"",
		"IMAPStore far",
		"Account far",
		"",
		"MaildirStore near",
		"Path " + maildir + "/",
		"Inbox " + maildir + "/INBOX",
		"",
		"Channel peers",
		"Far :far:",
		"Near :near:",
		"Patterns INBOX",
		"Create Near",
		"Sync Pull",
		"SyncState *",
	}, "\n") + "\n"
	confFile := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		return sample{}, err
	}
	cmd := exec.Command("mbsync", "-q", "-c", confFile, "peers")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("mbsync: %w: %s", err, out.Bytes())
	}
	got := 0
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(maildir, "INBOX", sub))
		if err != nil {
			return sample{}, fmt.Errorf("mbsync's Maildir: %w", err)
		}
		got += len(ents)
	}
	if got != w.n {
		return sample{}, fmt.Errorf("mbsync stored %d of %d mails: %s", got, w.n, out.Bytes())
	}
	return sample{wall: wall, cpu: map[string]time.Duration{"mbsync": cpuOf(cmd)}}, nil
}

// fetch runs `mailgate fetch` (one poll of every connected account, all
// new mail to tickets, then exit) against a fresh Redis with the given
// config lines, and times it from the process's start to its exit. Every
// mail is unseen before and must be \Seen after, which mailgate sets only
// once a ticket is stored.
func (w *world) fetch(redisConf ...string) (sample, error) {
	c := w.c
	defer c.runTo(c.mark())
	rs, redisPid, err := w.redis(c, redisConf...)
	if err != nil {
		return sample{}, err
	}
	if err := w.connect(rs); err != nil {
		return sample{}, err
	}
	dir, err := os.MkdirTemp(w.dir, "fetch-")
	if err != nil {
		return sample{}, err
	}
	c.add(func() { os.RemoveAll(dir) })
	cfg, err := w.writeConfig(dir, rs, relayOpts{})
	if err != nil {
		return sample{}, err
	}
	if err := w.unseeAll(); err != nil {
		return sample{}, fmt.Errorf("taking \\Seen off the mails: %w", err)
	}
	if u, err := w.dovecot.Unseen(mailbox); err != nil || u != w.n {
		return sample{}, fmt.Errorf("before fetch: %d of %d mails unseen (%v)", u, w.n, err)
	}

	redisBefore, err := procCPU(redisPid)
	if err != nil {
		return sample{}, err
	}
	cmd := exec.Command(w.bin, "--config", cfg, "fetch")
	cmd.Env = mgproc.Env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("mailgate fetch: %w: %s", err, lastLines(out.String(), 20))
	}
	redisAfter, err := procCPU(redisPid)
	if err != nil {
		return sample{}, err
	}
	if u, err := w.dovecot.Unseen(mailbox); err != nil || u != 0 {
		return sample{}, fmt.Errorf("after mailgate fetch %d of %d mails still unseen (%v): %s", u, w.n, err, lastLines(out.String(), 20))
	}
	return sample{wall: wall, cpu: map[string]time.Duration{
		"mailgate":     cpuOf(cmd),
		"redis-server": redisAfter - redisBefore,
	}}, nil
}

// cpuOf is the user + system time of a command that has exited.
func cpuOf(cmd *exec.Cmd) time.Duration {
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// lastLines is the end of a command's output for an error message, with
// progress lines ("\r12/100 mails") reduced to their last state.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if j := strings.LastIndexByte(l, '\r'); j >= 0 {
			lines[i] = l[j+1:]
		}
	}
	if len(lines) > n {
		lines = append([]string{"... (" + strconv.Itoa(len(lines)-n) + " lines)"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
