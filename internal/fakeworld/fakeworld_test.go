package fakeworld_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/internal/fakeworld"
)

// TestConfigureMakesAValidConfiguration is what the demo and the e2e tests
// rely on: a configuration pointed at the world loads back, validates,
// trusts the fakes' certificates and holds a usable DKIM key.
func TestConfigureMakesAValidConfiguration(t *testing.T) {
	w, err := fakeworld.Start(fakeworld.Options{Redis: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := w.Dir
	defer func() {
		w.Close()
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("Close left %s behind (stat: %v)", dir, err)
		}
	}()

	cfg := config.Defaults()
	w.Configure(cfg)
	y, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mailgate.yaml")
	if err := os.WriteFile(path, y, 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := config.Load(path, nil)
	if err != nil {
		t.Fatalf("Load(the configured file) = %v", err)
	}

	// The embedded Redis is the one configured.
	opt, err := redis.ParseURL(loaded.Redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Errorf("PING the configured Redis %s: %v", loaded.Redis.URL, err)
	}

	// google.ca_file trusts the fake Gmail SMTP server under Gmail's name.
	pem, err := os.ReadFile(loaded.Google.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c, err := smtp.DialStartTLS(loaded.Google.SMTPAddr, &tls.Config{RootCAs: roots, ServerName: "smtp.gmail.com"})
	if err != nil {
		t.Errorf("STARTTLS to the fake Gmail SMTP with google.ca_file: %v", err)
	} else {
		c.Close()
	}

	// The DKIM key file holds the algorithm the configuration names.
	if len(loaded.DKIM.Keys) != 1 {
		t.Fatalf("dkim.keys = %+v, want the world's key", loaded.DKIM.Keys)
	}
	k := loaded.DKIM.Keys[0]
	s, err := dkim.LoadKey(k.PrivateKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := dkim.Algorithm(s); got != k.Algorithm || k.Domain != fakeworld.DKIMDomain {
		t.Errorf("dkim key %s holds %s, configured %+v", k.PrivateKeyFile, got, k)
	}
}

// TestLoopbackMX sends every domain's mail to the world's MX.
func TestLoopbackMX(t *testing.T) {
	mxs, err := fakeworld.LoopbackMX{}.LookupMX(context.Background(), "customer.example")
	if err != nil || len(mxs) != 1 || mxs[0].Host != "127.0.0.1." {
		t.Fatalf("LookupMX = %v, %v, want 127.0.0.1.", mxs, err)
	}
}
