package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"testing"
	"time"
)

// handshake runs a TLS handshake over a real loopback listener and returns
// the client's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.(*tls.Conn).Handshake()
		io.Copy(io.Discard, c)
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		return err
	}
	return c.Close()
}

func TestHandshake(t *testing.T) {
	ca, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	server := ca.ServerTLS("smtp.gmail.com")
	for _, name := range []string{"127.0.0.1", "localhost", "smtp.gmail.com"} {
		if err := handshake(t, server, ca.ClientTLS(name)); err != nil {
			t.Errorf("handshake as %q: %v", name, err)
		}
	}
	if err := handshake(t, server, ca.ClientTLS("imap.gmail.com")); err == nil {
		t.Errorf("handshake as imap.gmail.com succeeded, want a name mismatch")
	}

	other, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := handshake(t, server, other.ClientTLS("127.0.0.1")); err == nil {
		t.Errorf("handshake trusting another CA succeeded, want unknown authority")
	}
}

func TestLeaf(t *testing.T) {
	ca, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	cert, err := ca.Leaf("mx.example.net", "192.0.2.1")
	if err != nil {
		t.Fatalf("Leaf: %v", err)
	}
	leaf := cert.Leaf
	now := time.Now()
	if !leaf.NotBefore.Before(now.Add(-50*time.Minute)) || !leaf.NotAfter.After(now.Add(23*time.Hour)) {
		t.Errorf("validity %v – %v, want from about an hour ago for 24h", leaf.NotBefore, leaf.NotAfter)
	}
	for _, host := range []string{"127.0.0.1", "::1", "localhost", "mx.example.net", "192.0.2.1"} {
		if err := leaf.VerifyHostname(host); err != nil {
			t.Errorf("VerifyHostname(%s): %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "mx.example.net"}); err != nil {
		t.Errorf("Verify against the CA: %v", err)
	}
	if leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm %v, want ECDSA", leaf.PublicKeyAlgorithm)
	}
}

func TestWritePEM(t *testing.T) {
	ca, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	dir := t.TempDir()
	caFile, certFile, keyFile, err := ca.WritePEM(dir, "relay.test")
	if err != nil {
		t.Fatalf("WritePEM: %v", err)
	}
	for _, f := range []string{caFile, certFile, keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}

	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadX509KeyPair: %v", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s holds no certificate", caFile)
	}
	server := &tls.Config{Certificates: []tls.Certificate{cert}}
	client := &tls.Config{RootCAs: pool, ServerName: "relay.test"}
	if err := handshake(t, server, client); err != nil {
		t.Errorf("handshake with the written files: %v", err)
	}
}

func TestPoolIsACopy(t *testing.T) {
	ca, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	p := ca.Pool()
	other, _ := New()
	p.AddCert(other.Certificate())
	if ca.Pool().Equal(p) {
		t.Errorf("changing a returned pool changed the CA's")
	}
}
