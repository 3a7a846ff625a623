// Package tlsmode names how mailgate secures a connection to a mail
// server (IMAP or SMTP), and says which hosts may be reached without TLS.
//
// It is a leaf: config validates these values and imapfetch, smtprelay
// and cmd/mailgate use them, and config may import no other project
// package, so the one definition lives below all of them.
package tlsmode

import (
	"fmt"
	"net"
	"strings"
)

// Mode is how a client secures its connection to a server.
type Mode string

const (
	// Implicit is TLS from the first byte (IMAPS 993, SMTPS 465, RFC 8314).
	Implicit Mode = "implicit"
	// StartTLS is a plaintext greeting, then STARTTLS, required to
	// succeed and to verify (RFC 3207 for SMTP, RFC 2595 for IMAP).
	StartTLS Mode = "starttls"
	// Opportunistic is STARTTLS when the server offers it, without
	// verifying its certificate, and plaintext when it does not (RFC 7435):
	// what delivery to MX hosts can expect. Never for credentials.
	Opportunistic Mode = "opportunistic"
	// Plain is no TLS at all; only allowed to loopback hosts (IsLoopback),
	// for local test servers and TLS-terminating proxies on the same host.
	Plain Mode = "plain"
)

// modes lists every mode, in the order error messages name them.
var modes = []Mode{Implicit, StartTLS, Opportunistic, Plain}

// String returns the mode as written in the configuration.
func (m Mode) String() string { return string(m) }

// Parse reads a mode as written in the configuration.
func Parse(s string) (Mode, error) {
	m := Mode(s)
	for _, known := range modes {
		if m == known {
			return m, nil
		}
	}
	return "", fmt.Errorf("unknown TLS mode %q (want implicit, starttls, opportunistic or plain)", s)
}

// Verified reports whether m guarantees an encrypted connection to a
// server whose certificate verified: the only modes fit to carry a
// password or an OAuth token to a host that is not loopback.
func (m Mode) Verified() bool { return m == Implicit || m == StartTLS }

// IsLoopback reports whether host (a name or an IP literal, with or
// without a ":port") is this machine: "localhost" in any case (DNS names
// are case-insensitive, RFC 4343, and RFC 6761 section 6.3 reserves the
// name for loopback) or an address in 127.0.0.0/8 or ::1.
func IsLoopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
