package smtprelay

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/internal/fakesmtp"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/tlsmode"
)

// The load the benchmark asks for: a helpdesk keeping 20 SMTP
// sessions open and sending 10 KB notifications over each.
const (
	benchSessions = 20
	benchMsgSize  = 10 << 10
)

// BenchmarkRelayAccept measures how many messages a second the Server
// accepts, each stored in Redis (and on its append-only file) before the
// 250. Redis persists as in production: appendonly yes, with appendfsync
// everysec (the usual setting) or always (nothing acknowledged is ever
// lost). As in `mailgate serve`, CheckDurability decides whether each
// store waits for the fsync with WAITAOF (Redis >= 7.2 with everysec).
func BenchmarkRelayAccept(b *testing.B) {
	if testing.Short() {
		b.Skip("starts redis-server and sends thousands of 10 KB messages; skipped with -short")
	}
	for _, fsync := range []string{"everysec", "always"} {
		b.Run("appendfsync="+fsync, func(b *testing.B) {
			q, meter := benchQueue(b, fsync)
			clients := benchClients(b, benchServer(b, q))
			msg := benchMessage(benchMsgSize)
			b.SetBytes(int64(len(msg)))
			b.ResetTimer()
			meter.start()
			benchSend(b, clients, b.N, msg)
			b.StopTimer()
			meter.report(b, b.N)
		})
	}
}

// BenchmarkRelayEndToEnd measures the whole relay: from the first message
// submitted to the last one received by a smarthost (an in-process sink),
// through the Redis queue and the delivery workers (relay.workers default,
// one SMTP connection per message). With dkim=rsa-2048 or dkim=ed25519
// each message is signed on the way, as direct mail from a domain with a
// key is. Redis fsyncs every write (appendfsync always), as a relay that
// loses nothing it acknowledged runs it.
func BenchmarkRelayEndToEnd(b *testing.B) {
	if testing.Short() {
		b.Skip("starts redis-server and relays thousands of 10 KB messages; skipped with -short")
	}
	for _, algo := range []string{"off", "rsa-2048", "ed25519"} {
		b.Run("appendfsync=always/dkim="+algo, func(b *testing.B) {
			q, meter := benchQueue(b, "always")
			sink, err := fakesmtp.NewMX(fakesmtp.MXOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { sink.Close() })
			opts := RelayOptions{
				Hostname: "relay.acme.example",
				Direct:   DirectOptions{Smarthost: sink.Addr(), SmarthostTLS: tlsmode.Plain},
				Timeouts: testTimeouts,
				Logger:   slog.New(slog.DiscardHandler),
			}
			signed := algo != "off"
			if signed {
				key, err := dkim.Generate(strings.TrimSuffix(algo, "-2048"), 0)
				if err != nil {
					b.Fatal(err)
				}
				if opts.Signer, err = dkim.NewSigner([]dkim.Key{{Domain: "acme.example", Selector: "mg", Signer: key}}); err != nil {
					b.Fatal(err)
				}
			}
			relay := NewRelay(q, noAccounts{}, opts)
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				relay.Run(ctx)
			}()
			b.Cleanup(func() { cancel(); <-stopped })
			clients := benchClients(b, benchServer(b, q))
			msg := benchMessage(benchMsgSize)
			b.SetBytes(int64(len(msg)))

			b.ResetTimer()
			meter.start()
			benchSend(b, clients, b.N, msg)
			// Generous: on a loaded machine the benchmark is slow, not wrong.
			got := sink.WaitFor(b.N, 2*time.Minute+time.Duration(b.N)*50*time.Millisecond)
			b.StopTimer()
			meter.report(b, b.N)
			if len(got) != b.N {
				b.Fatalf("sink received %d of %d messages", len(got), b.N)
			}
			if signed && !strings.Contains(string(got[0].Data), "DKIM-Signature:") {
				b.Fatal("message reached the sink unsigned")
			}
		})
	}
}

// benchQueue starts a redis-server persisting with appendfsync fsync and
// returns a queue on it set up as the daemon would (CheckDurability), and
// the meter of its round trips and of both processes' CPU.
func benchQueue(b *testing.B, fsync string) (*Queue, *benchMeter) {
	b.Helper()
	srv := redistest.Start(b, "appendonly yes", "appendfsync "+fsync)
	rdb := srv.Client(b)
	d := CheckDurability(context.Background(), rdb)
	if d.Warning != "" {
		b.Logf("Redis durability warning (as `mailgate serve` would log): %s", d.Warning)
	}
	return NewQueue(rdb, QueueOptions{WaitAOF: d.WaitAOF}), newBenchMeter(b, rdb)
}

// benchServer serves the relay's SMTP side on loopback; startRelay does
// the same for tests but takes a *testing.T.
func benchServer(b *testing.B, q *Queue) string {
	b.Helper()
	s := NewServer(q, ServerOptions{
		Hostname:         "relay.acme.example",
		AllowedNetworks:  loopback,
		SupportAddresses: func(context.Context) ([]string, error) { return []string{"support@acme.example"}, nil },
		MaxMessageBytes:  25 << 20,
		// The helpdesk's sessions all come from one address.
		Limits: Limits{MaxPerIP: benchSessions},
		Logger: slog.New(slog.DiscardHandler),
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(l)
	b.Cleanup(func() { s.Shutdown(context.Background()) })
	return l.Addr().String()
}

// benchClients opens the helpdesk's SMTP sessions, greeted and ready.
func benchClients(b *testing.B, addr string) []*smtp.Client {
	b.Helper()
	clients := make([]*smtp.Client, benchSessions)
	for i := range clients {
		c, err := smtp.Dial(addr)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Hello("helpdesk.acme.example"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		clients[i] = c
	}
	return clients
}

// benchSend sends n messages over the sessions in parallel, each session
// reusing its connection (MAIL, RCPT, DATA, RSET) as a busy helpdesk does.
func benchSend(b *testing.B, clients []*smtp.Client, n int, msg []byte) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for _, c := range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := sendOne(c, msg); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func sendOne(c *smtp.Client, msg []byte) error {
	if err := c.Mail("support@acme.example", nil); err != nil {
		return err
	}
	if err := c.Rcpt("customer@example.org", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Reset()
}

// benchMessage returns a plain-text notification of size bytes, in lines
// of 78 characters as mail user agents wrap them.
func benchMessage(size int) []byte {
	var sb strings.Builder
	sb.WriteString("From: Acme Support <support@acme.example>\r\nTo: customer@example.org\r\n" +
		"Subject: [#4711] Re: printer on fire\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	line := strings.Repeat("All work and no play makes Jack a dull boy. ", 2)[:76] + "\r\n"
	for sb.Len()+len(line) <= size {
		sb.WriteString(line)
	}
	sb.WriteString(strings.Repeat("x", max(size-sb.Len()-2, 0)) + "\r\n")
	return []byte(sb.String())
}
