package faults

import (
	"testing"
	"time"
)

// outage is how long Redis stays down when it is killed: longer than
// go-redis's own retries (about a second), so that every part of mailgate
// sees Redis gone, as after a real crash and restart.
const outage = 5 * time.Second

// TestRedisKilled kills Redis (-9) and restarts it on the same port with
// its append-only file, once while customer mail is being imported and
// once while the helpdesk submits notifications. With "appendfsync
// always" Redis loses nothing it acknowledged, so neither may mailgate.
func TestRedisKilled(t *testing.T) {
	w := newWorld(t, standalone)
	p := w.serve()
	w.waitPolled(p.Started, 15*time.Second)

	w.phase("mid-import", func(t *testing.T) {
		l := w.startLoad(40*time.Millisecond, 0)
		w.underWay(30, 0)
		w.redis.Kill()
		time.Sleep(outage)
		must(t, w.redis.Restart())
		healed := time.Now()
		w.endLoad(l, 5*time.Second, "Redis kill -9 and restart mid-import", healed, true, false, time.Time{})
	})
	w.phase("mid-relay-burst", func(t *testing.T) {
		l := w.startLoad(0, 50*time.Millisecond)
		_, before := w.counts()
		w.underWay(0, before+20)
		w.redis.Kill()
		time.Sleep(outage)
		must(t, w.redis.Restart())
		healed := time.Now()
		w.endLoad(l, 5*time.Second, "Redis kill -9 and restart mid-relay-burst", healed, false, true, healed)
	})
}

// TestRedisRestartedEmpty restarts Redis without its data under a running
// serve, as a Redis without persistence (or a flush, or a failover to a
// replica that lost everything) comes back: the relay must deliver again
// without a restart of mailgate. What Redis lost is lost; the suite waits
// until every earlier notification was delivered, so that nothing accepted
// is in the lost data.
func TestRedisRestartedEmpty(t *testing.T) {
	w := newWorld(t, standalone)
	p := w.serve()
	w.waitPolled(p.Started, 15*time.Second)
	w.burst(6)
	w.drain()

	must(t, w.redis.RestartEmpty())
	healed := time.Now()
	l := w.startLoad(0, 150*time.Millisecond)
	w.endLoad(l, 8*time.Second, "Redis restarted empty", healed, false, true, healed)
}

// TestRedisFrozen freezes Redis (SIGSTOP) for longer than the relay waits
// for it, under customer mail and notifications, then thaws it. A
// submission the relay answered with 451 while Redis was frozen is tried
// again by the helpdesk: the copy Redis stored late must not be delivered
// as well.
func TestRedisFrozen(t *testing.T) {
	w := newWorld(t, standalone)
	p := w.serve()
	w.waitPolled(p.Started, 15*time.Second)
	l := w.startLoad(100*time.Millisecond, 100*time.Millisecond)
	w.underWay(10, 5)
	must(t, w.redis.Pause())
	time.Sleep(8 * time.Second)
	must(t, w.redis.Resume())
	healed := time.Now()
	w.endLoad(l, 5*time.Second, "Redis frozen (SIGSTOP) for 8s", healed, true, true, healed)
}

// must fails the test on err, for the break-Redis helpers that return
// errors so that goroutines may call them too.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
