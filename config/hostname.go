package config

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// SystemNames is how the relay learns the machine's name when
// relay.hostname is unset; a nil field uses the system's (os.Hostname,
// and the resolver, which reads /etc/hosts before DNS). Tests inject both.
type SystemNames struct {
	Hostname    func() (string, error)
	LookupCNAME func(ctx context.Context, host string) (string, error)
}

// RelayHostname is the name the relay gives itself in EHLO, in its
// Received field and in the Message-IDs it makes: relay.hostname when
// set, else the machine's fully qualified name (the canonical name of its
// host name, "vm.example.com" for "vm"), else the bare host name.
//
// warning is set when the name has no dot: receivers may refuse an EHLO
// that is not a fully qualified domain name (RFC 5321 section 4.1.1.1).
// It is a warning, not an error: on a test machine the short name works.
func (c *Config) RelayHostname(names SystemNames) (name, warning string) {
	name = c.Relay.Hostname
	if name == "" {
		name = systemFQDN(names)
	}
	if !strings.Contains(strings.Trim(name, "."), ".") {
		warning = fmt.Sprintf("relay.hostname: %q is not a fully qualified domain name; receivers may refuse the relay's EHLO and Message-IDs: set relay.hostname to the relay's public name (e.g. mail.example.com)", name)
	}
	return name, warning
}

// systemFQDN returns the machine's canonical name, or its bare host name
// when it has no other, or "localhost".
func systemFQDN(names SystemNames) string {
	hostname, lookup := names.Hostname, names.LookupCNAME
	if hostname == nil {
		hostname = os.Hostname
	}
	if lookup == nil {
		lookup = net.DefaultResolver.LookupCNAME
	}
	host, err := hostname()
	if err != nil || host == "" {
		return "localhost"
	}
	if strings.Contains(host, ".") {
		return host
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if cname, err := lookup(ctx, host); err == nil {
		if fqdn := strings.TrimSuffix(cname, "."); strings.Contains(fqdn, ".") {
			return fqdn
		}
	}
	return host
}
