package imapfetch

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/fakegmail"
)

var (
	idleHeapProfile = flag.String("idle-heap-profile", "", "BenchmarkIdleAccounts writes a heap profile taken while the accounts are in IDLE to `FILE`")
	idleCPUProfile  = flag.String("idle-cpu-profile", "", "BenchmarkIdleAccounts writes a CPU profile of 65s in IDLE (each account polls once a minute) to `FILE`")
)

// BenchmarkIdleAccounts connects idleAccounts accounts to the in-process
// fake Gmail with production timings (poll every minute, IDLE in
// between), waits until each has polled once, and reports what an
// account costs while it waits in IDLE: goroutines and heap and stack
// bytes per account. The fake Gmail's side of each connection is in the
// figures too; the heap profile shows which is whose.
//
//	go test -run '^$' -bench IdleAccounts -benchtime 1x ./imapfetch -args -idle-heap-profile /tmp/idle.heap
func BenchmarkIdleAccounts(b *testing.B) {
	const idleAccounts = 1000
	if *idleHeapProfile != "" {
		runtime.MemProfileRate = 1024
		defer func() { runtime.MemProfileRate = 512 * 1024 }()
	}
	e := newEnv(b, fakegmail.Options{})
	e.log = slog.New(slog.DiscardHandler)
	o := e.options()
	o.Logger = e.log
	o.Tokens = e.tokens(nil)
	o.PollInterval = time.Minute
	o.IdleRestart = 25 * time.Minute
	o.LeaseTTL = 30 * time.Second
	o.CommandTimeout = time.Minute
	for i := range idleAccounts {
		e.connect(fmt.Sprintf("idle%05d@example.com", i), 0)
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	start := time.Now()
	stop := e.start(New(e.acc, e.st, o))
	defer stop()
	waitFor(b, 3*time.Minute, "every account polled once", func() bool {
		list, err := e.acc.List(context.Background())
		if err != nil {
			return false
		}
		n := 0
		for _, a := range list {
			if a.LastPoll.After(start) {
				n++
			}
		}
		return n == idleAccounts
	})
	b.ReportMetric(time.Since(start).Seconds(), "s-all-polled")
	time.Sleep(2 * time.Second) // the last ones enter IDLE
	var after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / idleAccounts / 1024 }
	b.ReportMetric(float64(runtime.NumGoroutine()-g0)/idleAccounts, "goroutines/account")
	b.ReportMetric(per(after.HeapInuse, before.HeapInuse), "heap-KB/account")
	b.ReportMetric(per(after.StackInuse, before.StackInuse), "stack-KB/account")
	if *idleHeapProfile != "" {
		f, err := os.Create(*idleHeapProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			b.Fatal(err)
		}
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
	}
	if *idleCPUProfile != "" {
		f, err := os.Create(*idleCPUProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		time.Sleep(65 * time.Second)
		pprof.StopCPUProfile()
	}
}
