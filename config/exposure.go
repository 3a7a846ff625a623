package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/mailgate/mailgate/tlsmode"
)

// privateRanges are the networks that cannot be reached from the Internet:
// loopback, RFC 1918 and RFC 4193 unique local addresses. An allowed
// network inside them admits only hosts the operator's own routing reaches.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fc00::/7"),
}

// CheckExposure applies the one rule for who may reach the relay, the same
// for `config check`, serve and a reload. A listener (relay.listen,
// relay.listen_tls) on loopback is not exposed and may be used as the
// operator likes. A listener beyond loopback needs:
//
//   - TLS (relay.tls_cert): without it an AUTH password, or the mail of an
//     allowed network, would cross the network in clear;
//   - allowed networks (relay.allowed_networks) that are private ranges
//     only (loopback, RFC 1918, RFC 4193): a network that covers any
//     public address would let strangers relay without AUTH, so hosts
//     there must log in with a relay.users account instead.
//
// So an exposed relay is either TLS plus AUTH, or TLS plus private
// networks, or both. The error names each key at fault.
func (r *Relay) CheckExposure() error {
	var p problems
	p.relayExposure(r)
	return errors.Join(p...)
}

func (p *problems) relayExposure(r *Relay) {
	exposed := ""
	for _, l := range []struct{ key, addr string }{{"relay.listen", r.Listen}, {"relay.listen_tls", r.ListenTLS}} {
		if l.addr == "" || listensOnLoopback(l.addr) {
			continue
		}
		if exposed == "" {
			exposed = l.key
		}
		if r.TLSCert == "" {
			if len(r.Users) > 0 {
				p.add(l.key, "%s is beyond loopback and relay.users is set but relay.tls_cert is not: passwords would cross the network in clear; add relay.tls_cert and relay.tls_key, or listen on loopback", l.addr)
			} else {
				p.add(l.key, "%s is beyond loopback without TLS: set relay.tls_cert and relay.tls_key (and relay.users for clients outside private networks), or listen on loopback", l.addr)
			}
		}
	}
	if exposed == "" {
		return
	}
	for i, n := range r.AllowedNetworks {
		pfx, err := netip.ParsePrefix(n)
		if err != nil {
			continue // reported as an invalid CIDR
		}
		if !privateOnly(pfx) {
			p.add(fmt.Sprintf("relay.allowed_networks[%d]", i), "%s covers public addresses and %s is beyond loopback: anyone there could relay without AUTH; list private ranges only (RFC 1918, RFC 4193, loopback) and give other hosts a relay.users login", n, exposed)
		}
	}
}

// minTokenLen is the shortest http.token accepted: 16 characters of
// `openssl rand -hex 16` are 64 bits, beyond guessing over HTTP.
const minTokenLen = 16

// httpExposure: /status shows customers' addresses and the From and
// Subject of quarantined mail, so beyond loopback it needs http.token. The
// errors never echo the token.
func (p *problems) httpExposure(h HTTP) {
	if h.Token != "" && len(h.Token) < minTokenLen {
		p.add("http.token", "must be at least %d characters (e.g. openssl rand -hex 32), got %d", minTokenLen, len(h.Token))
	}
	if strings.ContainsAny(h.Token, " \t\r\n") {
		p.add("http.token", "must not contain spaces or line breaks")
	}
	if h.Listen != "" && !listensOnLoopback(h.Listen) && h.Token == "" {
		p.add("http.listen", "%s is beyond loopback: /status shows customer addresses and quarantined mail, so set http.token (a Bearer token /status and /metrics then require), or listen on loopback", h.Listen)
	}
}

// listensOnLoopback: "localhost", 127.0.0.0/8 or ::1. An empty host, a
// wildcard or any other name listens beyond this machine.
func listensOnLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && host != "" && tlsmode.IsLoopback(host)
}

// privateOnly reports whether every address of pfx is in a private range.
// An IPv4-mapped IPv6 prefix is judged as the IPv4 prefix it maps.
func privateOnly(pfx netip.Prefix) bool {
	pfx = pfx.Masked()
	if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
		pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
	}
	for _, r := range privateRanges {
		if r.Addr().BitLen() == pfx.Addr().BitLen() && pfx.Bits() >= r.Bits() && r.Contains(pfx.Addr()) {
			return true
		}
	}
	return false
}
