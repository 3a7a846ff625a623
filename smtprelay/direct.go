package smtprelay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mailgate/mailgate/tlsmode"
)

// Resolver finds the mail exchangers of a domain; *net.Resolver is one.
// Tests inject a stub that points at a fake MX.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
}

// DirectOptions say how the relay delivers mail itself.
type DirectOptions struct {
	Resolver Resolver
	// Port is the MX port: 25, or a fake MX's port in tests.
	Port int
	// TLS is used for opportunistic STARTTLS to MX hosts and for the
	// smarthost (whose certificate must verify).
	TLS *tls.Config
	// Smarthost, when set (host:port), receives all direct mail instead of
	// the recipients' MX hosts, with SmarthostUser/Password over STARTTLS.
	Smarthost         string
	SmarthostUser     string
	SmarthostPassword string
	SmarthostTLS      tlsmode.Mode // tlsmode.StartTLS (default), Implicit, Opportunistic, Plain (loopback tests)
}

// directRoute delivers to the recipients' MX hosts (or the smarthost).
type directRoute struct {
	opts     DirectOptions
	hostname string
	timeout  time.Duration
}

func (d *directRoute) name() string {
	if d.opts.Smarthost != "" {
		return RouteSmarthost
	}
	return RouteDirect
}

// deliver sends data (already signed) to every recipient of m, one SMTP
// transaction per recipient domain.
func (d *directRoute) deliver(ctx context.Context, m *Message, data []byte) *attempt {
	if d.opts.Smarthost != "" {
		var auth sasl.Client
		if d.opts.SmarthostUser != "" {
			auth = sasl.NewPlainClient("", d.opts.SmarthostUser, d.opts.SmarthostPassword)
		}
		mode := d.opts.SmarthostTLS
		if mode == "" {
			mode = tlsmode.StartTLS
		}
		return d.toHost(ctx, d.opts.Smarthost, mode, auth, m.From, m.To, data)
	}
	all := newAttempt()
	for domain, rcpts := range byDomain(m.To) {
		all.merge(d.toDomain(ctx, domain, m.From, rcpts, data))
	}
	return all
}

// toDomain tries the domain's MX hosts in preference order (RFC 5321
// section 5.1), moving on when one cannot be reached or answers 4xx.
func (d *directRoute) toDomain(ctx context.Context, domain, from string, rcpts []string, data []byte) *attempt {
	hosts, err := d.mxHosts(ctx, domain)
	if err != nil {
		a := newAttempt()
		a.failAll(rcpts, err)
		return a
	}
	result, temp := newAttempt(), map[string]error{}
	for _, h := range hosts {
		a := d.toHost(ctx, net.JoinHostPort(h, strconv.Itoa(d.port())), tlsmode.Opportunistic, nil, from, rcpts, data)
		result.delivered = append(result.delivered, a.delivered...)
		for r, e := range a.perm {
			result.perm[r] = e
		}
		if len(a.temp) == 0 {
			return result
		}
		// Try the recipients this MX deferred on the next one.
		temp, rcpts = a.temp, keys(a.temp)
	}
	result.temp = temp
	return result
}

func (d *directRoute) port() int {
	if d.opts.Port == 0 {
		return 25
	}
	return d.opts.Port
}

// mxHosts returns the MX hosts by preference; a domain without MX records
// is its own mail exchanger (RFC 5321 section 5.1, "implicit MX"), and a
// null MX ("." , RFC 7505) means it accepts no mail.
func (d *directRoute) mxHosts(ctx context.Context, domain string) ([]string, error) {
	r := d.opts.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	mxs, err := r.LookupMX(ctx, domain)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return []string{domain}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("MX lookup for %s: %w", domain, err)
	}
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
	var hosts []string
	for _, mx := range mxs {
		h := strings.TrimSuffix(mx.Host, ".")
		if h == "" {
			return nil, &permError{fmt.Sprintf("%s accepts no mail (null MX, RFC 7505)", domain)}
		}
		hosts = append(hosts, h)
	}
	if len(hosts) == 0 {
		return []string{domain}, nil
	}
	return hosts, nil
}

// permError is a permanent failure that is not an SMTP reply.
type permError struct{ msg string }

func (e *permError) Error() string { return e.msg }

func (d *directRoute) toHost(ctx context.Context, addr string, mode tlsmode.Mode, auth sasl.Client, from string, rcpts []string, data []byte) *attempt {
	c, err := dial(ctx, dialOptions{addr: addr, tlsMode: mode, tls: d.opts.TLS, hostname: d.hostname, auth: auth, timeout: d.timeout})
	if err != nil {
		a := newAttempt()
		a.failAll(rcpts, fmt.Errorf("%s: %w", addr, err))
		return a
	}
	defer c.Close()
	a := send(c, from, rcpts, data)
	c.Quit()
	return a
}

// byDomain groups recipients by their domain, lower-cased.
func byDomain(rcpts []string) map[string][]string {
	out := map[string][]string{}
	for _, r := range rcpts {
		d := domainOf(r)
		out[d] = append(out[d], r)
	}
	return out
}

func keys(m map[string]error) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
