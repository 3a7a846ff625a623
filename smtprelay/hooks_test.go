package smtprelay

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/oauth"
)

// calls records hook calls as strings, safe for the server's goroutines.
type calls struct {
	mu  sync.Mutex
	got []string
}

func (c *calls) add(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, s)
}

func (c *calls) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	got := c.got
	c.got = nil
	return got
}

func TestOnAcceptTellsAcceptedAndRefused(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	users := map[string]string{"helpdesk": string(hash)}
	const body = "From: support@acme.test\r\nSubject: x\r\n\r\nx\r\n"
	tests := []struct {
		name    string
		opts    ServerOptions
		auth    sasl.Client
		from    string
		data    string
		redisUp bool
		want    string
	}{
		{"accepted", ServerOptions{AllowedNetworks: loopback}, nil, "support@acme.test", body, true, "accepted"},
		{"unknown sender", ServerOptions{AllowedNetworks: loopback}, nil, "spammer@elsewhere.test", body, true, "refused " + RejectSender},
		{"sender address no route can deliver", ServerOptions{AllowedNetworks: loopback, AllowedSenders: []string{"acme.test"}}, nil, `"john doe"@acme.test`, body, true, "refused " + RejectAddress},
		{"no auth", ServerOptions{Users: users}, nil, "support@acme.test", body, true, "refused " + RejectAuth},
		{"bad password", ServerOptions{Users: users}, sasl.NewPlainClient("", "helpdesk", "wrong"), "support@acme.test", body, true, "refused " + RejectAuth},
		{"oversized", ServerOptions{AllowedNetworks: loopback, MaxMessageBytes: 1000}, nil, "support@acme.test",
			"From: support@acme.test\r\nSubject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 30), true, "refused " + RejectSize},
		{"redis down", ServerOptions{AllowedNetworks: loopback}, nil, "support@acme.test", body, false, "refused " + RejectQueue},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c calls
			tc.opts.OnAccept = func(accepted bool, reason string) {
				if accepted {
					c.add("accepted" + reason)
					return
				}
				c.add("refused " + reason)
			}
			e := startRelay(t, tc.opts)
			if !tc.redisUp {
				e.srv.Kill()
			}
			_, err := submit(t, e.addr, tc.auth, tc.from, []string{"a@x.test"}, tc.data)
			if (err == nil) != (tc.want == "accepted") {
				t.Fatalf("submit = %v, want %s", err, tc.want)
			}
			if got := c.take(); !slices.Equal(got, []string{tc.want}) {
				t.Errorf("OnAccept calls = %q, want %q", got, tc.want)
			}
		})
	}
}

// relayWithHooks rebuilds w's relay with hooks that record into c, as
// "route result", and a token registry on google (nil: w's fake Google)
// whose refreshes are recorded as "refresh account <error>".
func relayWithHooks(w *relayWorld, c *calls, google *fakeoauth.Server) {
	opts := w.relay.opts
	opts.OnDelivery = func(route Route, o Outcome) { c.add(route.String() + " " + o.String()) }
	if google == nil {
		google = w.google
	}
	opts.Gmail.Tokens = w.tokens(google, func(account string, err error) {
		switch {
		case err == nil:
			c.add("refresh " + account + " ok")
		case errors.Is(err, oauth.ErrInvalidGrant):
			c.add("refresh " + account + " invalid_grant")
		default:
			c.add("refresh " + account + " " + err.Error())
		}
	})
	w.relay = NewRelay(w.q, w.acc, opts)
}

func TestOnDeliveryAndOnTokenRefresh(t *testing.T) {
	w := newRelayWorld(t, 500)
	var c calls
	relayWithHooks(w, &c, nil)
	steps := []struct {
		name string
		try  func()
		want []string
	}{
		{"via Gmail", func() { w.queueAndTry(gmailAcct, notif(gmailAcct, "one")) },
			[]string{"refresh " + gmailAcct + " ok", "gmail delivered"}},
		{"via Gmail, access token cached", func() { w.queueAndTry(gmailAcct, notif(gmailAcct, "two")) },
			[]string{"gmail delivered"}},
		{"attachment, direct", func() { w.queueAndTry(wsAcct, withPDF(wsAcct)) },
			[]string{"direct delivered"}},
		{"MX says try later", func() {
			w.mx.FailData(1, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
			w.queueAndTry(wsAcct, withPDF(wsAcct))
		}, []string{"direct deferred"}},
		{"MX says no such user", func() {
			w.mx.FailRcpt(customer, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
			w.queueAndTry(wsAcct, withPDF(wsAcct))
			w.mx.FailRcpt(customer, nil)
		}, []string{"direct bounced"}},
	}
	for _, s := range steps {
		s.try()
		if got := c.take(); !slices.Equal(got, s.want) {
			t.Errorf("%s: hook calls %q, want %q", s.name, got, s.want)
		}
	}
}

// A revoked grant is a failed refresh, and the message goes another way.
func TestOnTokenRefreshInvalidGrant(t *testing.T) {
	w := newRelayWorld(t, 500)
	var c calls
	other := fakeoauth.New() // knows none of the stored refresh tokens
	t.Cleanup(other.Close)
	relayWithHooks(w, &c, other)
	m := w.queueAndTry(wsAcct, notif(wsAcct, "n"))
	want := []string{"refresh " + wsAcct + " invalid_grant", "direct delivered"}
	if got := c.take(); !slices.Equal(got, want) || m.Route != RouteDirect {
		t.Errorf("hook calls %q, route %s; want %q, direct", got, m.Route, want)
	}
}

// A message that outlives the queue bounces; never tried, it had no route.
func TestOnDeliveryExpired(t *testing.T) {
	w := newRelayWorld(t, 500)
	var c calls
	relayWithHooks(w, &c, nil)
	m := prepare([]byte(withPDF(wsAcct)), wsAcct, []string{customer, "bob@customer.example"}, "relay.test", w.clock.t, nil)
	if err := w.q.Put(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	w.clock.t = w.clock.t.Add(6 * 24 * time.Hour)
	w.tryNext()
	want := []string{"none bounced", "none bounced"}
	if got := c.take(); !slices.Equal(got, want) {
		t.Errorf("hook calls %q, want %q", got, want)
	}
}
