package smtprelay

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// benchMeter counts what a benchmark's messages cost besides wall time,
// which on a shared machine says little: CPU of this process (the relay,
// and the benchmark's own SMTP clients and sink) and of redis-server
// separately, and round trips to Redis (a pipeline or MULTI is one).
type benchMeter struct {
	rdb       *redis.Client
	pid       int
	trips     atomic.Int64
	cpu0, rc0 time.Duration
	trips0    int64
}

// newBenchMeter hooks rdb to count its round trips.
func newBenchMeter(b testing.TB, rdb *redis.Client) *benchMeter {
	m := &benchMeter{rdb: rdb}
	rdb.AddHook(m)
	info, err := rdb.Info(context.Background(), "server").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			m.pid, _ = strconv.Atoi(v)
		}
	}
	return m
}

func (m *benchMeter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (m *benchMeter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n != "hello" && n != "client" { // a new connection's set-up
			m.trips.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (m *benchMeter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if n := c.Name(); n != "hello" && n != "client" {
				m.trips.Add(1)
				break
			}
		}
		return next(ctx, cmds)
	}
}

// start marks the beginning of the measured part.
func (m *benchMeter) start() {
	m.cpu0, m.rc0, m.trips0 = selfCPU(), procCPU(m.pid), m.trips.Load()
}

// report adds the per-message figures of the n messages since start.
func (m *benchMeter) report(b *testing.B, n int) {
	cpu, rc, trips := selfCPU()-m.cpu0, procCPU(m.pid)-m.rc0, m.trips.Load()-m.trips0
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "µs-cpu/msg")
	b.ReportMetric(float64(rc.Microseconds())/float64(n), "µs-redis/msg")
	b.ReportMetric(float64(trips)/float64(n), "trips/msg")
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the utime+stime of process pid, from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is 0, utime 11, stime 12 (in ticks).
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}
