package smtprelay

import (
	"bytes"
	"context"
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/mailgate/mailgate/internal/testcert"
)

// serveWorld starts the relay's SMTP side on w's queue, for the helpdesk
// on loopback, and returns its address.
func (w *relayWorld) serveWorld(opts ServerOptions) string {
	w.t.Helper()
	opts.Hostname = "relay.acme.example"
	opts.AllowedNetworks = loopback
	opts.SupportAddresses = func(context.Context) ([]string, error) { return []string{gmailAcct, wsAcct}, nil }
	if opts.LookupAddr == nil {
		opts.LookupAddr = func(context.Context, string) ([]string, error) { return []string{"helpdesk.internal."}, nil }
	}
	s := NewServer(w.q, opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	go s.Serve(l)
	w.t.Cleanup(func() { s.Shutdown(context.Background()) })
	return l.Addr().String()
}

// internalHop is a Received field the helpdesk's own mail system adds.
const internalHop = "Received: from app-7.corp.internal (10.1.2.3) by mta.corp.internal; Tue, 1 Dec 2026 10:00:00 +0000\r\n"

func receivedFields(data []byte) []string {
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	unfolded := strings.ReplaceAll(string(head), "\r\n ", " ")
	unfolded = strings.ReplaceAll(unfolded, "\r\n\t", " ")
	var out []string
	for _, line := range strings.Split(unfolded, "\r\n") {
		if strings.HasPrefix(strings.ToLower(line), "received:") {
			out = append(out, line)
		}
	}
	return out
}

// TestReceivedOnBothRoutes: mail via Gmail and mail sent direct each carry
// exactly one Received field of the relay's, on top, naming the client,
// the protocol and the queue id; the signed one still verifies.
func TestReceivedOnBothRoutes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		strip bool
	}{{"kept", false}, {"stripped", true}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newRelayWorld(t, 500)
			addr := w.serveWorld(ServerOptions{StripReceived: tc.strip})
			for _, route := range []Route{RouteGmail, RouteDirect} {
				from, data, server := gmailAcct, notif(gmailAcct, "hello"), w.gmail
				if route == RouteDirect {
					from, data, server = wsAcct, withPDF(wsAcct), w.mx
				}
				text, err := submit(t, addr, nil, from, []string{customer}, internalHop+data)
				if err != nil {
					t.Fatal(err)
				}
				id := text[strings.LastIndex(text, " ")+1:]
				w.tryNext()
				got := server.Received()
				if len(got) == 0 {
					t.Fatalf("%s: nothing delivered", route)
				}
				fields := receivedFields(got[len(got)-1].Data)
				want := regexp.MustCompile(`^Received: from localhost \(helpdesk\.internal \[127\.0\.0\.1\]\) by relay\.acme\.example \(mailgate\) with ESMTP id ` + id +
					` for <` + customer + `>; \w{3}, \d+ \w{3} \d{4} `)
				ours := 0
				for _, f := range fields {
					if strings.Contains(f, "by relay.acme.example") {
						ours++
					}
				}
				if ours != 1 || len(fields) == 0 || !want.MatchString(fields[0]) {
					t.Errorf("%s: Received fields %q, want one of ours on top, matching %s", route, fields, want)
				}
				if hop := len(fields) == 2 && strings.Contains(fields[1], "corp.internal"); hop == tc.strip {
					t.Errorf("%s, strip_received %v: Received fields %q", route, tc.strip, fields)
				}
				if route == RouteDirect {
					verifs, err := msgdkim.VerifyWithOptions(bytes.NewReader(got[len(got)-1].Data), &msgdkim.VerifyOptions{LookupTXT: w.lookupTXT})
					if err != nil || len(verifs) != 2 {
						t.Fatalf("verify: %v, %d signatures", err, len(verifs))
					}
					for _, v := range verifs {
						if v.Err != nil {
							t.Errorf("signature by %s does not verify: %v", v.Domain, v.Err)
						}
					}
				}
			}
		})
	}
}

// TestReceivedSaysESMTPSA: over STARTTLS with AUTH, the queued message's
// Received field says ESMTPSA and names the AUTH user in a comment; with
// two recipients it names neither. A client's odd EHLO name cannot break
// the field's syntax.
func TestReceivedSaysESMTPSA(t *testing.T) {
	ca, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	e := startRelay(t, ServerOptions{Users: map[string]string{"helpdesk": string(hash)}, TLS: ca.ServerTLS("relay.test"),
		LookupAddr: func(context.Context, string) ([]string, error) { return nil, errors.New("no PTR") }})
	c, err := smtp.DialStartTLS(e.addr, ca.ClientTLS("relay.test"))
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "helpdesk", "s3cret")); err != nil {
		t.Fatalf("AUTH over TLS: %v", err)
	}
	if err := c.SendMail("support@acme.test", []string{"a@x.test", "b@x.test"}, strings.NewReader("From: support@acme.test\r\nSubject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatalf("send over TLS: %v", err)
	}
	ms, err := e.q.List(context.Background(), 10)
	if err != nil || len(ms) != 1 {
		t.Fatalf("queue %v, %v", ms, err)
	}
	m, err := e.q.Get(context.Background(), ms[0].ID, true)
	if err != nil {
		t.Fatal(err)
	}
	want := "Received: from localhost ([127.0.0.1]) (authenticated user helpdesk) by relay.test (mailgate) with ESMTPSA id " + m.ID + "; "
	if f := receivedFields(m.Data); len(f) != 1 || !strings.HasPrefix(f[0], want) {
		t.Errorf("Received fields %q, want one starting %q", f, want)
	}

	tr := &trace{hostname: "relay.test", helo: "desk (evil);x", ip: loopback[0].Addr()}
	if got := tr.field("q1", nil, time.Now()); !strings.HasPrefix(got, "from desk__evil__x ([127.0.0.0]) by relay.test") {
		t.Errorf("field = %q, want the EHLO name defused", got)
	}
}
