package imapfetch

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/fakegmail"
)

// benchMails is the mailbox size of BenchmarkImport (10,000 mails
// of 10 KB each).
const benchMails = 10000

// BenchmarkImport measures one PollOnce that turns 10,000 unread 10 KB
// mails in the in-process fake Gmail into tickets on a real redis-server:
// UID SEARCH, UID FETCH BODY.PEEK[] in batches, Ingest, UID STORE \Seen,
// cursor writes. It reports tickets per second.
//
//	go test -run '^$' -bench Import -benchtime 1x ./imapfetch
func BenchmarkImport(b *testing.B) {
	if testing.Short() {
		b.Skip("fills a mailbox with 10,000 mails; skipped with -short")
	}
	for _, batch := range []int{20, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			e := newEnv(b, fakegmail.Options{})
			e.log = slog.New(slog.DiscardHandler)
			o := e.options()
			o.Logger = e.log
			o.BatchSize = batch
			f := New(e.acc, e.st, o)
			var total time.Duration
			var cpu cpuMeter
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				email := fmt.Sprintf("bench%d-%d@example.com", batch, i)
				e.connect(email, 0)
				pollOnce(b, f, email) // the first session: cursor set, import done
				for n := 0; n < benchMails; n++ {
					if _, err := e.gm.Deliver(email, benchMail(email, n), false); err != nil {
						b.Fatal(err)
					}
				}
				cpu.start(b, e)
				total += timedImport(b, f, email)
				cpu.stop(b, e)
			}
			b.ReportMetric(float64(benchMails*b.N)/total.Seconds(), "tickets/s")
			cpu.report(b, benchMails*b.N)
		})
	}
}

// timedImport starts the timer for the one PollOnce that turns email's
// benchMails unread mails into tickets, and returns how long it took.
func timedImport(b *testing.B, f *Fetcher, email string) time.Duration {
	b.Helper()
	b.StartTimer()
	start := time.Now()
	rep, err := f.PollOnce(context.Background(), email, nil)
	took := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	if rep.Created != benchMails {
		b.Fatalf("PollOnce = %+v, want %d tickets", rep, benchMails)
	}
	return took
}

// benchMail is a 10 KB plain-text mail.
func benchMail(to string, n int) []byte {
	head := string(testMail(to, n))
	line := strings.Repeat("The printer on the third floor is on fire again. ", 2) + "\r\n"
	var b strings.Builder
	b.Grow(10 << 10)
	b.WriteString(head)
	for b.Len() < 10<<10 {
		b.WriteString(line)
	}
	return []byte(b.String())
}

// cpuMeter adds up the CPU time of this process (the fetcher, and with
// BenchmarkImport the in-process fake Gmail too) and of redis-server
// (INFO cpu) over the timed imports, so that the per-mail cost can be read
// on a machine shared with other work, where tickets/s says little.
type cpuMeter struct {
	goStart, redisStart time.Duration
	goCPU, redisCPU     time.Duration
}

func (m *cpuMeter) start(b *testing.B, e *env) {
	m.goStart, m.redisStart = processCPU(b), redisCPU(b, e)
}

func (m *cpuMeter) stop(b *testing.B, e *env) {
	m.goCPU += processCPU(b) - m.goStart
	m.redisCPU += redisCPU(b, e) - m.redisStart
}

// report prints CPU microseconds per mail: go-µs/mail and redis-µs/mail.
func (m *cpuMeter) report(b *testing.B, mails int) {
	b.ReportMetric(float64(m.goCPU.Microseconds())/float64(mails), "go-µs/mail")
	b.ReportMetric(float64(m.redisCPU.Microseconds())/float64(mails), "redis-µs/mail")
}

// processCPU is the user and system time this process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisCPU is the user and system time redis-server used so far.
func redisCPU(b *testing.B, e *env) time.Duration {
	info, err := e.rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu %s: %v", k, err)
			}
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}
