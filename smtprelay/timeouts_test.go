package smtprelay

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/tlsmode"
)

// hangingSMTP is a smarthost that speaks just enough SMTP by hand to take
// a message, and can go silent after the final dot or after QUIT: the
// stall a real server shows when its disk or its content filter hangs.
// go-smtp's server cannot be made to hold back those replies.
type hangingSMTP struct {
	l        net.Listener
	mu       sync.Mutex
	stall    map[string]int // "dot" or "quit" → connections left to stall there
	sessions chan hangSession
}

// hangSession is what one connection saw.
type hangSession struct {
	dot    time.Time // the final dot arrived
	closed time.Time // the client closed the connection
	stall  string    // where the server went silent, if it did
	queued bool      // the server answered 250 to the dot
}

func startHangingSMTP(t *testing.T, stall map[string]int) *hangingSMTP {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &hangingSMTP{l: l, stall: stall, sessions: make(chan hangSession, 10)}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

// stalls reports whether this connection goes silent at step, and counts it.
func (s *hangingSMTP) stalls(step string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stall[step] > 0 {
		s.stall[step]--
		return true
	}
	return false
}

func (s *hangingSMTP) serve(c net.Conn) {
	var h hangSession
	defer func() {
		h.closed = time.Now()
		c.Close()
		s.sessions <- h
	}()
	r := bufio.NewReader(c)
	say := func(line string) { c.Write([]byte(line + "\r\n")) }
	silent := func(step string) {
		// Read (and drop) whatever comes until the client gives up.
		h.stall = step
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
		}
	}
	say("220 smarthost.test ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		switch cmd := strings.ToUpper(strings.TrimSpace(line)); {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			say("250 smarthost.test")
		case cmd == "DATA":
			say("354 go ahead")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			h.dot = time.Now()
			if s.stalls("dot") {
				silent("dot")
				return
			}
			h.queued = true
			say("250 2.0.0 queued")
		case cmd == "QUIT":
			if s.stalls("quit") {
				silent("quit")
				return
			}
			say("221 2.0.0 bye")
			return
		default: // MAIL, RCPT, RSET, NOOP
			say("250 2.0.0 ok")
		}
	}
}

// next returns what the next connection saw, once it is closed.
func (s *hangingSMTP) next(t *testing.T) hangSession {
	t.Helper()
	select {
	case h := <-s.sessions:
		return h
	case <-time.After(20 * time.Second):
		t.Fatal("no SMTP session ended within 20s")
		return hangSession{}
	}
}

// TestStalledSmarthostFreesTheWorker: a smarthost that takes the message
// and never answers the final dot holds a delivery worker for the
// configured data and quit timeouts, not for RFC 5321's ten minutes; the
// message is retried and delivered. One that answers the dot but not QUIT
// costs the quit timeout, and the message counts as delivered, once.
func TestStalledSmarthostFreesTheWorker(t *testing.T) {
	timeouts := Timeouts{Connect: 5 * time.Second, Command: 5 * time.Second, Data: 400 * time.Millisecond, Quit: 300 * time.Millisecond}
	run := func(t *testing.T, stall map[string]int) (*Queue, *hangingSMTP, string) {
		srv := startHangingSMTP(t, stall)
		q := NewQueue(redistest.Start(t).Client(t), QueueOptions{})
		relay := NewRelay(q, noAccounts{}, RelayOptions{
			Hostname:      "relay.acme.example",
			Direct:        DirectOptions{Smarthost: srv.l.Addr().String(), SmarthostTLS: tlsmode.Plain},
			Timeouts:      timeouts,
			RetrySchedule: []time.Duration{200 * time.Millisecond},
			Workers:       1,
			Logger:        slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan struct{})
		go func() { defer close(stopped); relay.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-stopped })
		m := prepare([]byte("Subject: [#5] hello\r\n\r\nHello\r\n"), "support@acme.example", []string{"customer@example.org"}, "relay.test", time.Now(), nil)
		if err := q.Put(ctx, m); err != nil {
			t.Fatal(err)
		}
		return q, srv, m.ID
	}
	// The worker's own bookkeeping around a try takes milliseconds; a
	// second and a half more is generous and still far below the old
	// eight minutes.
	const slack = 1500 * time.Millisecond

	t.Run("silent after the final dot", func(t *testing.T) {
		q, srv, id := run(t, map[string]int{"dot": 1})
		first := srv.next(t)
		held := first.closed.Sub(first.dot)
		if first.stall != "dot" || held < timeouts.Data || held > timeouts.Data+timeouts.Quit+slack {
			t.Fatalf("stalled session held the worker %v after the final dot (stall %q), want between %v and %v",
				held, first.stall, timeouts.Data, timeouts.Data+timeouts.Quit+slack)
		}
		t.Logf("worker gave up %v after the final dot", held.Round(time.Millisecond))
		second := srv.next(t)
		m := waitState(t, q, id, StateSent)
		if !second.queued || m.Attempts != 2 || !strings.Contains(m.LastError, "waiting for the reply to the final dot") || !strings.Contains(m.LastError, "timeout") {
			t.Errorf("after the retry: %+v (second session queued=%v); want sent on the 2nd try, the 1st failing with a timeout", m, second.queued)
		}
	})
	t.Run("silent after QUIT", func(t *testing.T) {
		q, srv, id := run(t, map[string]int{"quit": 1})
		first := srv.next(t)
		held := first.closed.Sub(first.dot)
		if first.stall != "quit" || !first.queued || held > timeouts.Quit+slack {
			t.Fatalf("session held the worker %v after the final dot (stall %q), want at most %v", held, first.stall, timeouts.Quit+slack)
		}
		if m := waitState(t, q, id, StateSent); m.Attempts != 1 {
			t.Errorf("message %+v, want sent on the first try: the 250 to the dot is what counts", m)
		}
		select {
		case h := <-srv.sessions:
			t.Errorf("another session %+v: the message was sent twice", h)
		case <-time.After(500 * time.Millisecond):
		}
	})
}

// waitState waits until queue message id is in state.
func waitState(t *testing.T, q *Queue, id, state string) *Message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := q.Get(context.Background(), id, false)
		if err != nil {
			t.Fatal(err)
		}
		if m.State == state {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %+v, want %s within 10s", m, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
