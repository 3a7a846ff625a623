package faults

import (
	"testing"
	"time"
)

// TestSentinelFailover kills the master of a Sentinel set (-9) while
// customer mail and notifications flow; the sentinels promote the
// replica, and mailgate follows it.
func TestSentinelFailover(t *testing.T) { failover(t, sentinel) }

// TestClusterFailover kills the master of the Cluster shard that holds
// mailgate's keys (they share the {mailgate} hash tag, so one slot) while
// mail flows; its replica takes over.
func TestClusterFailover(t *testing.T) { failover(t, cluster) }

func failover(t *testing.T, topo topology) {
	w := newWorld(t, topo)
	p := w.serve()
	w.waitPolled(p.Started, 15*time.Second)
	l := w.startLoad(60*time.Millisecond, 120*time.Millisecond)
	w.underWay(30, 10)
	killed := time.Now()
	var healed time.Time
	switch topo {
	case sentinel:
		old := w.sentinel.KillMaster(t)
		healed = w.sentinel.WaitFailover(t, old, 30*time.Second)
	case cluster:
		slot := w.prefix + "events"
		old := w.cluster.KillMasterOf(t, slot)
		healed = w.cluster.WaitFailover(t, slot, old, 30*time.Second)
	}
	t.Logf("%s: the master was killed; a new one serves %s later", topo, healed.Sub(killed).Round(10*time.Millisecond))
	w.endLoad(l, 6*time.Second, topo.String()+" master killed", healed, true, true, healed)
}
