package smtprelay

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/internal/testcert"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/tickets"
)

// stubMX answers every MX lookup with one host: the fake MX on loopback.
type stubMX struct{}

func (stubMX) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	return []*net.MX{{Host: "127.0.0.1.", Pref: 10}}, nil
}

// testTimeouts keep a test whose server hangs from hanging with it; the
// fakes on loopback answer at once.
var testTimeouts = Timeouts{Connect: 10 * time.Second, Command: 10 * time.Second, Data: 10 * time.Second, Quit: 2 * time.Second}

type event struct {
	typ    tickets.EventType
	ticket int64
	data   map[string]any
}

// relayWorld is a relay wired to a real Redis, a fake Google (OAuth and
// Gmail SMTP) and a fake recipient MX.
type relayWorld struct {
	t      *testing.T
	redis  *redistest.Server
	q      *Queue
	relay  *Relay
	acc    *accounts.Store
	google *fakeoauth.Server
	gmail  *fakesmtp.Server
	mx     *fakesmtp.Server
	keys   []dkim.Key
	clock  *clock
	mu     sync.Mutex
	events []event
}

const (
	gmailAcct = "acme.support@gmail.com" // a consumer Gmail account
	wsAcct    = "support@acme.example"   // a Workspace account on a domain we sign for
	customer  = "alice@customer.example"
)

// newRelayWorld builds the world, its redis-server started with the
// extra configuration lines redisConf.
func newRelayWorld(t *testing.T, limit int, redisConf ...string) *relayWorld {
	t.Helper()
	ctx := context.Background()
	w := &relayWorld{t: t, clock: &clock{t: time.Now()}}
	srv := redistest.Start(t, redisConf...)
	w.redis = srv
	rdb := srv.Client(t)
	google := fakeoauth.New()
	t.Cleanup(google.Close)
	w.google = google
	ca, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	w.gmail, err = fakesmtp.NewGmail(fakesmtp.GmailOptions{TLS: ca.ServerTLS("smtp.gmail.com"), Validate: google.Validate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.gmail.Close() })
	w.mx, err = fakesmtp.NewMX(fakesmtp.MXOptions{TLS: ca.ServerTLS("mx.customer.example")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.mx.Close() })

	box, _ := oauth.LoadOrCreateKey(filepath.Join(t.TempDir(), "key"))
	w.acc = accounts.New(rdb, accounts.Options{Box: box})
	for _, a := range []accounts.Account{{Email: gmailAcct, Kind: accounts.KindGmail}, {Email: wsAcct, Kind: accounts.KindWorkspace}} {
		if _, err := w.acc.Connect(ctx, a, google.IssueRefreshToken(a.Email)); err != nil {
			t.Fatal(err)
		}
	}
	for _, algo := range []string{dkim.AlgoRSA, dkim.AlgoEd25519} {
		k, err := dkim.Generate(algo, 0)
		if err != nil {
			t.Fatal(err)
		}
		w.keys = append(w.keys, dkim.Key{Domain: "acme.example", Selector: "mg-" + algo, Signer: k})
	}
	signer, err := dkim.NewSigner(w.keys)
	if err != nil {
		t.Fatal(err)
	}
	_, mxPort, _ := net.SplitHostPort(w.mx.Addr())
	port := 0
	for _, c := range mxPort {
		port = port*10 + int(c-'0')
	}
	w.q = NewQueue(rdb, QueueOptions{Now: w.clock.Now, ClaimIdle: 300 * time.Millisecond})
	w.q.EnsureGroup(ctx)
	w.relay = NewRelay(w.q, w.acc, RelayOptions{
		Hostname: "relay.acme.example",
		Gmail:    GmailOptions{Addr: w.gmail.Addr(), TLS: ca.ClientTLS("smtp.gmail.com"), Tokens: w.tokens(google, nil)},
		Direct:   DirectOptions{Resolver: stubMX{}, Port: port, TLS: ca.ClientTLS("")},
		Signer:   signer,
		Limits: func(accounts.Kind) sendlimit.Limits {
			return sendlimit.Limits{Messages: limit, PerMessageRcpt: 100}
		},
		WarnAt:   0.8,
		Timeouts: testTimeouts,
		Now:      w.clock.Now,
		Publish: func(_ context.Context, typ tickets.EventType, ticket int64, data any) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.events = append(w.events, event{typ, ticket, data.(map[string]any)})
		},
	})
	return w
}

// tokens is a token registry on w's accounts and the fake google, built as
// the daemon builds its one; onRefresh may be nil.
func (w *relayWorld) tokens(google *fakeoauth.Server, onRefresh func(account string, err error)) *oauth.Registry {
	return oauth.NewRegistry(google.Config(""), oauth.RegistryOptions{
		Load: w.acc.RefreshToken, Save: w.acc.SaveRefreshToken, MarkNeedsReconnect: w.acc.MarkNeedsReconnect,
		OnRefresh: onRefresh,
	})
}

func (w *relayWorld) eventsOf(typ tickets.EventType) []event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []event
	for _, e := range w.events {
		if e.typ == typ {
			out = append(out, e)
		}
	}
	return out
}

// queueAndTry queues a message and runs one delivery try of it, as a
// worker would.
func (w *relayWorld) queueAndTry(from, data string) *Message {
	w.t.Helper()
	m := prepare([]byte(data), from, []string{customer}, "relay.acme.example", w.clock.t, nil)
	if err := w.q.Put(context.Background(), m); err != nil {
		w.t.Fatal(err)
	}
	w.tryNext()
	got, err := w.q.Get(context.Background(), m.ID, false)
	if err != nil {
		w.t.Fatal(err)
	}
	return got
}

func (w *relayWorld) tryNext() {
	w.t.Helper()
	ms, err := w.q.Next(context.Background(), "test", 1, time.Second)
	if err != nil || len(ms) != 1 {
		w.t.Fatalf("Next = %v, %v; want one message", ms, err)
	}
	if err := w.relay.Process(context.Background(), ms[0]); err != nil {
		w.t.Fatal(err)
	}
}

func notif(from, subject string) string {
	return "From: Acme <" + from + ">\r\nTo: " + customer + "\r\nSubject: " + subject + "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nWe are on it.\r\n"
}

func withPDF(from string) string {
	return "From: Acme <" + from + ">\r\nTo: " + customer + "\r\nSubject: Your invoice\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n" +
		"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=invoice.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
}

func TestNotificationGoesViaGmailWithXOAUTH2(t *testing.T) {
	w := newRelayWorld(t, 500)
	m := w.queueAndTry(gmailAcct, notif(gmailAcct, "[#7] We got your request"))
	got := w.gmail.Received()
	if m.State != StateSent || m.Route != RouteGmail || len(got) != 1 {
		t.Fatalf("message %+v; Gmail received %d", m, len(got))
	}
	if got[0].AuthUser != gmailAcct || !got[0].TLS || got[0].FromRewritten {
		t.Errorf("Gmail got %+v, want it authenticated as the account over TLS", got[0])
	}
	if bytes.Contains(got[0].Data, []byte("DKIM-Signature")) {
		t.Error("mail via Gmail was DKIM-signed by us; Google signs it")
	}
	if len(w.mx.Received()) != 0 {
		t.Error("mail via Gmail also reached the MX")
	}
}

// TestAttachmentGoesDirectSigned: mail with a real attachment does not go
// via Gmail SMTP: it goes direct, dual-signed, and both signatures verify.
func TestAttachmentGoesDirectSigned(t *testing.T) {
	w := newRelayWorld(t, 500)
	m := w.queueAndTry(wsAcct, withPDF(wsAcct))
	got := w.mx.Received()
	if m.State != StateSent || m.Route != RouteDirect || len(got) != 1 || len(w.gmail.Received()) != 0 {
		t.Fatalf("message %+v; MX got %d, Gmail %d", m, len(got), len(w.gmail.Received()))
	}
	verifs, err := msgdkim.VerifyWithOptions(bytes.NewReader(got[0].Data), &msgdkim.VerifyOptions{LookupTXT: w.lookupTXT})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range verifs {
		if v.Err != nil {
			t.Errorf("signature by %s does not verify: %v", v.Domain, v.Err)
		}
	}
	if len(verifs) != 2 {
		t.Errorf("%d signatures, want RSA and Ed25519 (dual signing)", len(verifs))
	}
}

func (w *relayWorld) lookupTXT(name string) ([]string, error) {
	for _, k := range w.keys {
		if k.RecordName() == strings.TrimSuffix(name, ".") {
			return []string{k.RecordValue()}, nil
		}
	}
	return nil, &net.DNSError{Err: "no such record", Name: name, IsNotFound: true}
}

// TestQuota: limit 10, warning at 80 %: the 8th message raises exactly one
// warning, the 11th goes direct (the Workspace account signs for its
// domain), and a 550 5.4.5 from Gmail reroutes at once.
func TestQuotaWarnsThenGoesDirect(t *testing.T) {
	w := newRelayWorld(t, 10)
	for i := 1; i <= 11; i++ {
		m := w.queueAndTry(wsAcct, notif(wsAcct, "n"))
		if want := RouteGmail; i > 10 {
			want = RouteDirect
			if m.Route != want {
				t.Fatalf("message %d went %s, want %s", i, m.Route, want)
			}
		} else if m.Route != want {
			t.Fatalf("message %d went %s, want %s", i, m.Route, want)
		}
		if n := len(w.eventsOf(tickets.EventQuotaWarning)); i < 8 && n != 0 || i >= 8 && n != 1 {
			t.Fatalf("after message %d: %d quota warnings, want %d", i, n, map[bool]int{true: 1, false: 0}[i >= 8])
		}
	}
	used, _, _ := w.relay.Quota().Used(context.Background(), wsAcct)
	if used != 10 {
		t.Errorf("quota used = %d, want 10", used)
	}
}

func TestGmailDailyLimitReroutesAtOnce(t *testing.T) {
	w := newRelayWorld(t, 500)
	w.gmail.SetDailyLimitReached(wsAcct, true)
	m := w.queueAndTry(wsAcct, notif(wsAcct, "n"))
	if m.State != StateSent || m.Route != RouteDirect || len(w.mx.Received()) != 1 {
		t.Fatalf("after Gmail's 550 5.4.5: %+v, MX got %d; want sent direct in the same try", m, len(w.mx.Received()))
	}
	// The next one does not even try Gmail.
	before := len(w.gmail.Transcripts())
	w.queueAndTry(wsAcct, notif(wsAcct, "n2"))
	if len(w.gmail.Transcripts()) != before {
		t.Error("relay tried Gmail again although Gmail said the limit was reached")
	}
	// A consumer Gmail account cannot be signed for: it waits instead.
	w.gmail.SetDailyLimitReached(gmailAcct, true)
	g := w.queueAndTry(gmailAcct, notif(gmailAcct, "n3"))
	if g.State != StateDeferred || g.Route != "deferred" || g.NextAttempt.Before(w.clock.t.Add(time.Hour)) {
		t.Errorf("gmail.com account over its limit: %+v, want deferred until the window frees", g)
	}
}

func TestTemporaryFailureRetriesAndDeliversOnce(t *testing.T) {
	w := newRelayWorld(t, 500)
	w.mx.FailData(1, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
	m := w.queueAndTry(wsAcct, withPDF(wsAcct))
	if m.State != StateDeferred || m.Attempts != 1 || !strings.Contains(m.LastError, "451") {
		t.Fatalf("after a 451: %+v, want deferred", m)
	}
	w.clock.t = m.NextAttempt.Add(time.Second)
	if n, _ := w.q.Promote(context.Background()); n != 1 {
		t.Fatalf("promoted %d, want 1", n)
	}
	w.tryNext()
	final, _ := w.q.Get(context.Background(), m.ID, false)
	if final.State != StateSent || len(w.mx.Received()) != 1 {
		t.Fatalf("after retry: %+v, MX received %d, want delivered exactly once", final, len(w.mx.Received()))
	}
}

func TestPermanentFailureBouncesWithDSN(t *testing.T) {
	w := newRelayWorld(t, 500)
	w.mx.FailRcpt(customer, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	m := w.queueAndTry(wsAcct, "X-Mailgate-Ticket: 9\r\n"+withPDF(wsAcct))
	if m.State != StateBounced {
		t.Fatalf("after a 550: %+v, want bounced", m)
	}
	ev := w.eventsOf(tickets.EventDeliveryFailed)
	if len(ev) != 1 || ev[0].ticket != 9 {
		t.Errorf("delivery.failed events = %+v, want one for ticket 9", ev)
	}
	// The DSN is queued to the sender; deliver it and read it.
	w.mx.FailRcpt(customer, nil)
	w.tryNext()
	got := w.mx.Received()
	if len(got) != 1 || got[0].From != "" || got[0].To[0] != wsAcct {
		t.Fatalf("DSN delivery = %+v, want one null-sender mail to %s", got, wsAcct)
	}
	dsn := string(got[0].Data)
	for _, want := range []string{"multipart/report; report-type=delivery-status", "Final-Recipient: rfc822; " + customer, "Status: 5.1.1", "Action: failed", "Auto-Submitted: auto-replied"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
}

// TestKilledWorkerMessageDeliveredOnce: a worker took the message and died
// before recording anything; another reclaims it and delivers it once.
func TestKilledWorkerMessageDeliveredOnce(t *testing.T) {
	w := newRelayWorld(t, 500)
	m := prepare([]byte(withPDF(wsAcct)), wsAcct, []string{customer}, "relay.test", w.clock.t, nil)
	w.q.Put(context.Background(), m)
	if dead, _ := w.q.Next(context.Background(), "dead-worker", 1, time.Second); len(dead) != 1 {
		t.Fatal("no message for the first worker")
	}
	time.Sleep(400 * time.Millisecond) // longer than ClaimIdle
	w.tryNext()
	final, _ := w.q.Get(context.Background(), m.ID, false)
	if final.State != StateSent || len(w.mx.Received()) != 1 {
		t.Fatalf("after reclaim: %+v, MX got %d, want delivered once", final, len(w.mx.Received()))
	}
}
