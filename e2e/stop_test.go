package e2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestServeStopsWholeWhenAPartFails: the relay's queue key clobbered (a
// string where the stream should be) makes the delivery part fail at
// start while the fetcher, the SMTP listener and HTTP run. The process
// must not stay up without delivery: it stops every part within
// shutdown_grace and exits non-zero naming the part, so that systemd
// restarts it.
func TestServeStopsWholeWhenAPartFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const grace = 3 * time.Second
	w := newWorld(t, ctx, Config{PollInterval: 2 * time.Second, LeaseTTL: 30 * time.Second, ShutdownGrace: grace})
	w.addAccount(account)
	if err := w.rdb.Set(ctx, prefix+"relay:ready", "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	serve := w.serve()
	code, err := serve.Wait(grace + 5*time.Second)
	if err != nil {
		t.Fatalf("%v: a daemon without its delivery part kept running", err)
	}
	log := serve.Log()
	if code == 0 || !strings.Contains(log, "mailgate: relay stopped: ") || !strings.Contains(log, "WRONGTYPE") {
		t.Fatalf("exit %d; want non-zero with 'mailgate: relay stopped: ...WRONGTYPE...' on stderr", code)
	}
	if strings.Contains(log, "parts not stopped") {
		t.Errorf("some parts did not stop within shutdown_grace")
	}
	t.Logf("exit %d after %s", code, time.Since(serve.Started).Round(time.Millisecond))
}
