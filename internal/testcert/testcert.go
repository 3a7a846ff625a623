// Package testcert makes a throwaway certificate authority and server
// certificates for tests and the demo, so TLS is exercised for real (STARTTLS
// to the fake Gmail SMTP server, the relay's own listener) without touching
// the system trust store.
//
// Keys are ECDSA P-256; certificates are valid from an hour ago (to tolerate
// clock skew between processes) for 24 hours. Nothing here is fit for
// production use.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// DefaultHosts are the names every server certificate covers, so a client
// that dials a test listener by its loopback address verifies it.
var DefaultHosts = []string{"127.0.0.1", "::1", "localhost"}

const (
	validBefore = time.Hour      // NotBefore = now - validBefore
	validFor    = 24 * time.Hour // NotAfter = now + validFor
)

// CA is a self-signed certificate authority. Its methods are safe for
// concurrent use: they only read the CA.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// New makes a new CA with a fresh key.
func New() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testcert: CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"mailgate tests"}, CommonName: "mailgate test CA"},
		NotBefore:             now.Add(-validBefore),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testcert: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testcert: CA certificate: %w", err)
	}
	return &CA{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}

// Certificate returns the CA's own certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return slices.Clone(ca.certPEM) }

// Pool returns a fresh pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// Leaf issues a server certificate for DefaultHosts plus hosts (IP addresses
// or DNS names), signed by the CA.
func (ca *CA) Leaf(hosts ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("testcert: server key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return tls.Certificate{}, err
	}
	all := append(slices.Clone(DefaultHosts), hosts...)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"mailgate tests"}, CommonName: all[len(all)-1]},
		NotBefore:    now.Add(-validBefore),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range all {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("testcert: server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("testcert: server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ServerTLS returns a server configuration with a fresh certificate for
// DefaultHosts plus hosts. It panics if the certificate cannot be made, which
// only happens if the system's random source fails.
func (ca *CA) ServerTLS(hosts ...string) *tls.Config {
	cert, err := ca.Leaf(hosts...)
	if err != nil {
		panic(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientTLS returns a client configuration that trusts only the CA and
// expects serverName, which must be one of the names the server certificate
// covers (e.g. "127.0.0.1", or "smtp.gmail.com" if ServerTLS was given it).
func (ca *CA) ClientTLS(serverName string) *tls.Config {
	return &tls.Config{
		RootCAs:    ca.Pool(),
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
	}
}

// WritePEM writes the CA certificate and a fresh server certificate and key
// for DefaultHosts plus hosts into dir as ca.pem, cert.pem and key.pem (mode
// 0600), for tests that pass file paths through config.
func (ca *CA) WritePEM(dir string, hosts ...string) (caFile, certFile, keyFile string, err error) {
	cert, err := ca.Leaf(hosts...)
	if err != nil {
		return "", "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return "", "", "", fmt.Errorf("testcert: marshal key: %w", err)
	}
	caFile = filepath.Join(dir, "ca.pem")
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	files := []struct {
		name string
		data []byte
	}{
		{caFile, ca.certPEM},
		{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})},
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
	}
	for _, f := range files {
		if err := os.WriteFile(f.name, f.data, 0o600); err != nil {
			return "", "", "", fmt.Errorf("testcert: %w", err)
		}
	}
	return caFile, certFile, keyFile, nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("testcert: serial number: %w", err)
	}
	return n, nil
}
