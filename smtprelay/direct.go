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

// ownRoute returns how the relay sends mail itself: through the
// smarthost when one is configured, else to the recipients' MX hosts.
// sign signs mail again that had to be downgraded to ASCII; cache keeps
// sessions open between messages.
func ownRoute(o DirectOptions, hostname string, t Timeouts, sign func([]byte) []byte, cache *connCache) (Route, courier) {
	if o.Smarthost != "" {
		return RouteSmarthost, &smarthostRoute{opts: o, hostname: hostname, timeouts: t, sign: sign, cache: cache}
	}
	return RouteDirect, &mxRoute{opts: o, hostname: hostname, timeouts: t, sign: sign, cache: cache}
}

// smarthostRoute hands all mail to one relay host (relay.smarthost).
type smarthostRoute struct {
	opts     DirectOptions
	hostname string
	timeouts Timeouts
	sign     func([]byte) []byte
	cache    *connCache
}

// Deliver sends data (already signed) to the smarthost in one transaction.
func (s *smarthostRoute) Deliver(ctx context.Context, from string, rcpts []string, data []byte) Result {
	var auth sasl.Client
	if s.opts.SmarthostUser != "" {
		auth = sasl.NewPlainClient("", s.opts.SmarthostUser, s.opts.SmarthostPassword)
	}
	mode := s.opts.SmarthostTLS
	if mode == "" {
		mode = tlsmode.StartTLS
	}
	return s.cache.deliver(ctx, dialOptions{addr: s.opts.Smarthost, tlsMode: mode, tls: s.opts.TLS,
		hostname: s.hostname, auth: auth, timeouts: s.timeouts, sign: s.sign}, from, rcpts, data)
}

// mxRoute delivers to the recipients' MX hosts.
type mxRoute struct {
	opts     DirectOptions
	hostname string
	timeouts Timeouts
	sign     func([]byte) []byte
	cache    *connCache
}

// Deliver sends data (already signed) to every recipient, one SMTP
// transaction per recipient domain.
func (d *mxRoute) Deliver(ctx context.Context, from string, rcpts []string, data []byte) Result {
	var res Result
	for _, domain := range domains(rcpts) {
		res = append(res, d.toDomain(ctx, domain.name, from, domain.rcpts, data)...)
	}
	return res
}

// toDomain tries the domain's MX hosts in preference order (RFC 5321
// section 5.1), moving on when one cannot be reached or answers 4xx.
func (d *mxRoute) toDomain(ctx context.Context, domain, from string, rcpts []string, data []byte) Result {
	hosts, err := d.mxHosts(ctx, domain)
	if err != nil {
		return failAllBy(rcpts, err)
	}
	var res Result
	for i, h := range hosts {
		o := dialOptions{addr: net.JoinHostPort(h, strconv.Itoa(d.port())), tlsMode: tlsmode.Opportunistic,
			tls: d.opts.TLS, hostname: d.hostname, timeouts: d.timeouts, sign: d.sign}
		got := d.cache.deliver(ctx, o, from, rcpts, data)
		waiting := got.rcpts(Deferred)
		if len(waiting) == 0 || i == len(hosts)-1 {
			return append(res, got...)
		}
		// Try the recipients this MX deferred on the next one.
		res, rcpts = append(res, got.except(waiting)...), waiting
	}
	return res // not reached: mxHosts returns at least one host
}

func (d *mxRoute) port() int {
	if d.opts.Port == 0 {
		return 25
	}
	return d.opts.Port
}

// mxHosts returns the MX hosts by preference; a domain without MX records
// is its own mail exchanger (RFC 5321 section 5.1, "implicit MX"), and a
// null MX ("." , RFC 7505) means it accepts no mail.
func (d *mxRoute) mxHosts(ctx context.Context, domain string) ([]string, error) {
	r := d.opts.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	mxs, err := r.LookupMX(ctx, asciiDomain(domain)) // DNS knows IDNs by their A-labels
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

// domainRcpts are the recipients at one domain.
type domainRcpts struct {
	name  string
	rcpts []string
}

// domains groups recipients by their domain, lower-cased, in the order
// the domains first appear.
func domains(rcpts []string) []domainRcpts {
	var out []domainRcpts
	at := map[string]int{}
	for _, r := range rcpts {
		d := domainOf(r)
		i, ok := at[d]
		if !ok {
			i = len(out)
			at[d] = i
			out = append(out, domainRcpts{name: d})
		}
		out[i].rcpts = append(out[i].rcpts, r)
	}
	return out
}
