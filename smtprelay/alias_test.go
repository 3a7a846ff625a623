package smtprelay

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// TestAliasGoesViaGmail: mail From a "Send mail as" alias of an account
// goes via that account's Gmail, authenticated as the account, with its
// From intact, and within the account's quota; a From that is neither the
// account nor one of its mailgate aliases never goes via Gmail (which would
// rewrite it), even when Gmail itself knows the address as an alias.
func TestAliasGoesViaGmail(t *testing.T) {
	w := newRelayWorld(t, 2)
	ctx := context.Background()
	const alias, gmailOnly = "help@acme.example", "sales@acme.example"
	if err := w.acc.SetAliases(ctx, gmailAcct, []string{alias}, nil); err != nil {
		t.Fatal(err)
	}
	w.gmail.SetAliases(gmailAcct, alias, gmailOnly)

	// The envelope is the account or the alias; the From is the alias.
	for i, env := range []string{gmailAcct, alias} {
		data := notif(alias, "sent as the alias")
		m := prepare([]byte(data), env, []string{customer}, "relay.acme.example", w.clock.t, nil)
		if d, err := w.relay.decide(ctx, m, readHeader(m.Data), reasonNone); err != nil || d.route != RouteGmail || d.reason != reasonAlias || d.account != gmailAcct {
			t.Errorf("envelope %s: decided route %s, reason %q, account %q (%v); want via Gmail as an alias of %s", env, d.route, d.reason, d.account, err, gmailAcct)
		}
		w.relay.Quota().Release(ctx, gmailAcct, m.ID, 1) // decide took it; nothing was sent
		if m := w.queueAndTry(env, data); m.State != StateSent || m.Route != RouteGmail {
			t.Fatalf("envelope %s: state %s, route %s; want sent via Gmail", env, m.State, m.Route)
		}
		got := w.gmail.Received()
		if len(got) != i+1 {
			t.Fatalf("Gmail received %d messages, want %d", len(got), i+1)
		}
		g := got[i]
		if g.AuthUser != gmailAcct || g.FromRewritten || !bytes.Contains(g.Data, []byte("From: Acme <"+alias+">")) {
			t.Errorf("envelope %s: Gmail got it as %s, From rewritten %v:\n%s", env, g.AuthUser, g.FromRewritten, g.Data)
		}
		if used, _, _ := w.relay.Quota().Used(ctx, gmailAcct); used != int64(i+1) {
			t.Errorf("envelope %s: the account's quota counts %d, want %d: an alias shares it", env, used, i+1)
		}
	}

	// Gmail knows sales@ as an alias, mailgate does not: not via Gmail.
	if m := w.queueAndTry(gmailAcct, notif(gmailOnly, "not ours")); m.State != StateSent || m.Route != RouteDirect {
		t.Errorf("From %s: state %s, route %s; want sent direct, as any From that is not the account", gmailOnly, m.State, m.Route)
	}
	// Quota used up by the alias mail: alias mail waits like the account's.
	if m := w.queueAndTry(alias, notif(alias, "over quota")); m.State != StateDeferred || m.Route != RouteDeferred {
		t.Errorf("alias over the account's quota: state %s, route %s; want deferred", m.State, m.Route)
	}
	for _, g := range w.gmail.Received() {
		if g.FromRewritten {
			t.Errorf("Gmail had to rewrite the From of a message mailgate sent:\n%s", g.Data)
		}
	}
	if n := len(w.gmail.Received()); n != 2 {
		t.Errorf("Gmail received %d messages, want the 2 alias ones", n)
	}
	if mx := w.mx.Received(); len(mx) != 1 || !strings.Contains(string(mx[0].Data), gmailOnly) {
		t.Errorf("MX received %d messages, want the one From %s", len(mx), gmailOnly)
	}

	// An alias removed from mailgate is an address like any other again.
	if err := w.acc.SetAliases(ctx, gmailAcct, nil, []string{alias}); err != nil {
		t.Fatal(err)
	}
	m := prepare([]byte(notif(alias, "x")), gmailAcct, []string{customer}, "relay.acme.example", w.clock.t, nil)
	if d, err := w.relay.decide(ctx, m, readHeader(m.Data), reasonNone); err != nil || d.reason != reasonFromNotAccount {
		t.Errorf("removed alias: reason %q (%v), want %q", d.reason, err, reasonFromNotAccount)
	}
}

// TestAliasAcceptedBySMTP: with the account store's support addresses, as
// serve wires them, the relay takes mail From an alias (envelope and
// header) and sends it via the account's Gmail; the alias of nobody is
// refused at DATA as before.
func TestAliasAcceptedBySMTP(t *testing.T) {
	w := newRelayWorld(t, 500)
	ctx := context.Background()
	const alias = "help@acme.example"
	if err := w.acc.SetAliases(ctx, gmailAcct, []string{alias}, nil); err != nil {
		t.Fatal(err)
	}
	w.gmail.SetAliases(gmailAcct, alias)
	s := NewServer(w.q, ServerOptions{Hostname: "relay.test", AllowedNetworks: loopback, MaxMessageBytes: 1 << 20,
		SupportAddresses: w.acc.SupportAddresses, Logger: slog.New(slog.DiscardHandler)})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Shutdown(context.Background()) })

	if _, err := submit(t, l.Addr().String(), nil, alias, []string{customer}, notif(alias, "from the alias")); err != nil {
		t.Fatalf("mail from the alias refused: %v", err)
	}
	w.tryNext()
	if g := w.gmail.Received(); len(g) != 1 || g[0].AuthUser != gmailAcct || g[0].FromRewritten {
		t.Fatalf("Gmail received %+v, want the alias's mail as %s, From intact", g, gmailAcct)
	}
	_, err = submit(t, l.Addr().String(), nil, gmailAcct, []string{customer}, notif("sales@acme.example", "not an alias"))
	if code(err) != 550 {
		t.Errorf("From an address that is no alias: %v, want 550", err)
	}
}
