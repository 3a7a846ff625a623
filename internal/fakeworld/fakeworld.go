// Package fakeworld starts, in the calling process, the outside world
// mailgate talks to: Google's OAuth endpoints, Gmail's IMAP server and SMTP
// submission server, the recipients' mail exchanger, the certificate
// authority their TLS certificates come from, a DKIM key, and on request an
// in-memory Redis. The demo (cmd/mailgate built with -tags demo) and the
// end-to-end tests (e2e) build their world here, the same way.
//
// Nothing here is fit for production use, and none of it is linked into
// the mailgate that `go build ./cmd/mailgate` makes.
package fakeworld

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/alicebob/miniredis/v2"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/testcert"
	"github.com/mailgate/mailgate/tlsmode"
)

// DKIMDomain is the domain the world holds a DKIM key for: accounts on it
// may go direct (signed) when they cannot go via Gmail.
const DKIMDomain = "acme.example"

// mxHostname is the name the recipients' mail exchanger greets with and
// holds a certificate for.
const mxHostname = "mx.customer.example"

// Options say how one world differs from another.
type Options struct {
	// Dir receives the CA certificate, the DKIM key and, through
	// Configure, mailgate's key file. Empty: a new temporary directory
	// that Close removes.
	Dir string
	// DKIMAlgorithm is dkim.AlgoRSA or dkim.AlgoEd25519 (the default:
	// its key is made at once, where RSA takes a moment).
	DKIMAlgorithm string
	// DKIMSelector names the key in DNS; default "fake".
	DKIMSelector string
	// Redis starts an in-memory Redis (miniredis) for mailgate to use.
	Redis bool
}

// World is the running fakes. Close stops them.
type World struct {
	Dir         string
	OAuth       *fakeoauth.Server // Google's OAuth endpoints
	IMAP        *fakegmail.Server // imap.gmail.com
	IMAPAddr    string
	GmailSMTP   *fakesmtp.Server // smtp.gmail.com:587
	MX          *fakesmtp.Server // every recipient's mail exchanger
	MXPort      int
	CAFile      string   // google.ca_file: trusts the fakes' certificates
	DKIM        dkim.Key // the key for DKIMDomain
	DKIMKeyFile string
	Redis       *miniredis.Miniredis // nil unless Options.Redis

	removeDir bool
}

// Start starts every fake on loopback. On error it stops those already
// started.
func Start(o Options) (w *World, err error) {
	w = &World{Dir: o.Dir}
	defer func() {
		if err != nil {
			w.Close()
			w = nil
		}
	}()
	if w.Dir == "" {
		if w.Dir, err = os.MkdirTemp("", "mailgate-fakes-"); err != nil {
			return w, err
		}
		w.removeDir = true
	}
	if o.Redis {
		if w.Redis, err = miniredis.Run(); err != nil {
			return w, fmt.Errorf("embedded Redis: %w", err)
		}
	}
	w.OAuth = fakeoauth.New()
	ca, err := testcert.New()
	if err != nil {
		return w, err
	}
	if w.CAFile, _, _, err = ca.WritePEM(w.Dir); err != nil {
		return w, err
	}
	if w.IMAP, err = fakegmail.New(fakegmail.Options{Validate: w.OAuth.Validate}); err != nil {
		return w, err
	}
	addr, err := w.IMAP.Start()
	if err != nil {
		return w, err
	}
	w.IMAPAddr = addr.String()
	imap := w.IMAP
	if w.GmailSMTP, err = fakesmtp.NewGmail(fakesmtp.GmailOptions{TLS: ca.ServerTLS("smtp.gmail.com"), Validate: w.OAuth.Validate,
		// Gmail files what an account sends in its Sent folder.
		Sent: func(account string, data []byte) { _, _ = imap.AppendSent(account, data) }}); err != nil {
		return w, err
	}
	if w.MX, err = fakesmtp.NewMX(fakesmtp.MXOptions{TLS: ca.ServerTLS(mxHostname), Hostname: mxHostname}); err != nil {
		return w, err
	}
	_, port, _ := net.SplitHostPort(w.MX.Addr())
	w.MXPort, _ = strconv.Atoi(port)
	return w, w.makeDKIMKey(o)
}

// makeDKIMKey writes the world's signing key for DKIMDomain.
func (w *World) makeDKIMKey(o Options) error {
	algo, selector := o.DKIMAlgorithm, o.DKIMSelector
	if algo == "" {
		algo = dkim.AlgoEd25519
	}
	if selector == "" {
		selector = "fake"
	}
	bits := 0
	if algo == dkim.AlgoRSA {
		bits = 2048
	}
	key, err := dkim.Generate(algo, bits)
	if err != nil {
		return err
	}
	w.DKIMKeyFile = filepath.Join(w.Dir, selector+"._domainkey."+DKIMDomain+".pem")
	if err := dkim.WriteKey(w.DKIMKeyFile, key); err != nil {
		return err
	}
	w.DKIM = dkim.Key{Domain: DKIMDomain, Selector: selector, Signer: key}
	return nil
}

// Configure points cfg at the world: Google's endpoints and servers, the CA
// that trusts them, the DKIM key, a key file in Dir, and the embedded Redis
// when there is one. The rest of cfg is left to the caller.
func (w *World) Configure(cfg *config.Config) {
	g := &cfg.Google
	g.ClientID, g.ClientSecret = fakeoauth.ClientID, fakeoauth.ClientSecret
	g.AuthURL, g.TokenURL, g.UserinfoURL = w.OAuth.URL+"/auth", w.OAuth.URL+"/token", w.OAuth.UserinfoURL()
	g.IMAPAddr, g.IMAPTLS = w.IMAPAddr, tlsmode.Plain
	g.SMTPAddr, g.SMTPTLS = w.GmailSMTP.Addr(), tlsmode.StartTLS
	g.CAFile = w.CAFile
	cfg.Secrets.KeyFile = filepath.Join(w.Dir, "mailgate.key")
	algo, _ := dkim.Algorithm(w.DKIM.Signer)
	cfg.DKIM.Keys = []config.DKIMKey{{Domain: DKIMDomain, Selector: w.DKIM.Selector, Algorithm: algo, PrivateKeyFile: w.DKIMKeyFile}}
	if w.Redis != nil {
		cfg.Redis.URL = "redis://" + w.Redis.Addr() + "/0"
	}
}

// Close stops the fakes and removes Dir if Start made it.
func (w *World) Close() {
	if w.IMAP != nil {
		w.IMAP.Close()
	}
	if w.GmailSMTP != nil {
		w.GmailSMTP.Close()
	}
	if w.MX != nil {
		w.MX.Close()
	}
	if w.OAuth != nil {
		w.OAuth.Close()
	}
	if w.Redis != nil {
		w.Redis.Close()
	}
	if w.removeDir {
		os.RemoveAll(w.Dir)
	}
}

// LoopbackMX is a resolver that names 127.0.0.1 as every domain's mail
// exchanger: with the relay's MX port set to World.MXPort, all direct mail
// reaches the world's MX.
type LoopbackMX struct{}

// LookupMX answers 127.0.0.1 for any name.
func (LoopbackMX) LookupMX(context.Context, string) ([]*net.MX, error) {
	return []*net.MX{{Host: "127.0.0.1.", Pref: 10}}, nil
}
