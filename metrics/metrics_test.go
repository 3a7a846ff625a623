package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Each Metrics has its own registry: two in one process (tests, the demo
// beside a daemon) must not collide, and the global registry stays empty.
func TestPrivateRegistries(t *testing.T) {
	a, b := New(Options{}), New(Options{})
	a.RelayAccept(true, "")
	for name, m := range map[string]*Metrics{"first": a, "second": b} {
		fams, err := m.Registry().Gather()
		if err != nil {
			t.Fatalf("%s: Gather: %v", name, err)
		}
		var accepted float64 = -1
		for _, f := range fams {
			if f.GetName() == "mailgate_relay_accepted_total" {
				accepted = f.GetMetric()[0].GetCounter().GetValue()
			}
		}
		want := map[string]float64{"first": 1, "second": 0}[name]
		if accepted != want {
			t.Errorf("%s: mailgate_relay_accepted_total = %v, want %v", name, accepted, want)
		}
	}
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if len(f.GetName()) > 9 && f.GetName()[:9] == "mailgate_" {
			t.Errorf("%s is in the global registry", f.GetName())
		}
	}
}
