package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/internal/dovecottest"
	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/internal/freeport"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/tlsmode"
)

// The mailbox both importers read, and the domain the relay sends from
// (and signs for).
const (
	mailbox    = "support@peers.example"
	sendDomain = "peers.example"
	sender     = "support@" + sendDomain
	recipient  = "customer@sink.example"
	mailSize   = 10 * 1024
)

// world is what every run shares: the fake Google token endpoint that
// Dovecot checks mailgate's XOAUTH2 tokens against, Dovecot holding the n
// mails, mailgate's secrets key and DKIM keys.
type world struct {
	c        *cleanups
	bin      string // the mailgate binary
	dir      string // on disk (ext4): Redis, Postfix queues, durable Maildirs
	tmpfs    string // the tmpfs for the non-durable Maildirs
	n        int
	oauth    *fakeoauth.Server
	dovecot  *dovecottest.Server
	keyFile  string
	box      *oauth.Box
	loadedAt time.Time // before the first mail was delivered: the account's connect time
	dkim     map[string]string
}

// startWorld starts the fakes and Dovecot and loads n mails of mailSize.
func startWorld(c *cleanups, bin, dir, tmpfs string, n int) (*world, error) {
	w := &world{c: c, bin: bin, dir: dir, tmpfs: tmpfs, n: n, dkim: map[string]string{}}
	w.oauth = fakeoauth.New()
	c.add(w.oauth.Close)
	var err error
	w.dovecot, err = dovecottest.Run(dovecottest.Options{Users: []string{mailbox}, TokeninfoURL: w.oauth.TokeninfoURL()})
	if err != nil {
		return nil, err
	}
	c.add(w.dovecot.Stop)
	w.keyFile = filepath.Join(dir, "mailgate.key")
	if w.box, err = oauth.LoadOrCreateKey(w.keyFile); err != nil {
		return nil, err
	}
	for _, algo := range []string{"rsa", "ed25519"} {
		file := filepath.Join(dir, "dkim-"+algo+".pem")
		out, err := exec.Command(bin, "dkim", "keygen", "--domain", sendDomain, "--selector", algo, "--algo", algo, "--out", file).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("mailgate dkim keygen --algo %s: %w: %s", algo, err, out)
		}
		w.dkim[algo] = file
	}

	// INTERNALDATE has whole seconds: a connect time a second before the
	// first delivery makes every mail new mail, not mail that was there
	// before the account was connected.
	w.loadedAt = time.Now().Add(-time.Second).Truncate(time.Second)
	const chunk = 500
	for i := 0; i < n; i += chunk {
		raws := make([][]byte, 0, chunk)
		for j := i; j < min(i+chunk, n); j++ {
			raws = append(raws, mail(j))
		}
		if _, err := w.dovecot.DeliverMany(mailbox, raws, false); err != nil {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "\rpeerbench: loaded %d/%d mails into Dovecot", min(i+chunk, n), n)
	}
	fmt.Fprintln(os.Stderr)
	return w, nil
}

// mail is the i-th customer mail: its own sender, subject and Message-ID
// (each becomes a new ticket), plain text padded to mailSize.
func mail(i int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Customer %05d <customer%05d@example.org>\r\n", i, i)
	fmt.Fprintf(&b, "To: Support <%s>\r\n", mailbox)
	fmt.Fprintf(&b, "Subject: Order %05d: the parcel has not arrived\r\n", i)
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <peerbench-%05d@example.org>\r\n", i)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Fprintf(&b, "Hello,\r\n\r\nmy order %05d was due last week and has not arrived yet.\r\n", i)
	for line := 0; b.Len() < mailSize; line++ {
		fmt.Fprintf(&b, "Line %04d of the details: tracking number, address, what was in the parcel.\r\n", line)
	}
	b.WriteString("\r\nThanks,\r\nA customer\r\n")
	return []byte(b.String())
}

// unseeAll takes \Seen off every mail, so the next fetch has all n to do.
func (w *world) unseeAll() error {
	c, err := imapclient.DialInsecure(w.dovecot.Addr(), nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Login(mailbox, dovecottest.Password).Wait(); err != nil {
		return err
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		return err
	}
	var all imap.SeqSet
	all.AddRange(1, 0) // 1:*
	if err := c.Store(all, &imap.StoreFlags{Op: imap.StoreFlagsDel, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
		return err
	}
	return c.Logout().Wait()
}

// redis starts a fresh redis-server with its files in a new directory
// under w.dir (on disk), with extra config lines.
func (w *world) redis(c *cleanups, extra ...string) (*redistest.Server, int, error) {
	dir, err := os.MkdirTemp(w.dir, "redis-")
	if err != nil {
		return nil, 0, err
	}
	c.add(func() { os.RemoveAll(dir) })
	rs, err := redistest.Run(dir, extra...)
	if err != nil {
		return nil, 0, err
	}
	c.add(rs.Kill)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	info, err := rdb.InfoMap(context.Background(), "server").Result()
	if err != nil {
		return nil, 0, err
	}
	var pid int
	fmt.Sscan(info["Server"]["process_id"], &pid)
	if pid == 0 {
		return nil, 0, fmt.Errorf("redis-server on %s: no process_id in INFO", rs.Addr)
	}
	return rs, pid, nil
}

// connect connects the mailbox in rs as `mailgate accounts connect`
// would, without the browser: the refresh token comes straight from the
// fake Google.
func (w *world) connect(rs *redistest.Server) error {
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	acc := accounts.New(rdb, accounts.Options{Box: w.box, Now: func() time.Time { return w.loadedAt }})
	_, err := acc.Connect(context.Background(), accounts.Account{Email: mailbox, Kind: accounts.KindGmail}, w.oauth.IssueRefreshToken(mailbox))
	return err
}

// relayOpts is what varies between the relay's configurations.
type relayOpts struct {
	listen    string
	smarthost string
	dkimAlgo  string // "" unsigned, "rsa" or "ed25519"
}

// writeConfig writes a mailgate configuration for Redis rs into dir: the
// defaults, pointed at the fake Google and Dovecot, with what the
// benchmark needs of the relay (a loopback client without AUTH, 20
// sessions at once from it, the next hop) and nothing else changed.
func (w *world) writeConfig(dir string, rs *redistest.Server, r relayOpts) (string, error) {
	cfg := config.Defaults()
	cfg.Redis.URL = rs.URL
	cfg.Secrets.KeyFile = w.keyFile
	g := &cfg.Google
	g.ClientID, g.ClientSecret = fakeoauth.ClientID, fakeoauth.ClientSecret
	g.AuthURL, g.TokenURL, g.UserinfoURL = w.oauth.URL+"/auth", w.oauth.URL+"/token", w.oauth.UserinfoURL()
	g.IMAPAddr, g.IMAPTLS = w.dovecot.Addr(), tlsmode.Plain
	httpAddr, err := freeport.Addr()
	if err != nil {
		return "", err
	}
	cfg.HTTP.Listen = httpAddr
	cfg.Relay.Listen = r.listen
	if cfg.Relay.Listen == "" {
		if cfg.Relay.Listen, err = freeport.Addr(); err != nil {
			return "", err
		}
	}
	cfg.Relay.Hostname = "relay.peers.example"
	cfg.Relay.AllowedNetworks = []string{"127.0.0.0/8"}
	cfg.Relay.AllowedSenders = []string{sendDomain}
	cfg.Relay.MaxConnectionsPerIP = 2 * sessions
	cfg.Relay.Smarthost = r.smarthost
	if r.dkimAlgo != "" {
		cfg.DKIM.Keys = []config.DKIMKey{{Domain: sendDomain, Selector: r.dkimAlgo, Algorithm: r.dkimAlgo, PrivateKeyFile: w.dkim[r.dkimAlgo]}}
	}
	cfg.ShutdownGrace = config.Duration(5 * time.Second)
	y, err := cfg.YAML()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "mailgate.yaml")
	return path, os.WriteFile(path, y, 0o600)
}
