package tickets

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/mailparse"
)

// BenchmarkIngest10KB measures ingest of a realistic 10 KB mail (text and
// HTML alternatives, an attachment, French text, threading headers) into a
// local redis-server: parse, then two round trips (raw, blob and a look at
// what the script's keys depend on; then the script). "parallel" runs 64
// ingesting goroutines, as several fetchers do; "parallel-unix" the same
// over Redis's unix socket, which spares the loopback TCP stack most of the
// cost of moving each mail twice.
//
//	go test -run '^$' -bench Ingest -benchtime 5000x ./tickets
func BenchmarkIngest10KB(b *testing.B) {
	raw := benchMail(b)
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	s := NewStore(rdb, Options{})
	su := NewStore(srv.UnixClient(b), Options{})
	ctx := context.Background()
	var n atomic.Int64
	unique := func() []byte {
		id := "bench-" + strconv.FormatInt(n.Add(1), 10) + "@mail.gmail.com"
		return bytes.Replace(raw, []byte("CAF-bench-0001@mail.gmail.com"), []byte(id), 1)
	}
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mails/s")
	}
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if r, err := s.Ingest(ctx, unique(), Source{}); err != nil || r.Duplicate {
				b.Fatalf("Ingest = %+v, %v", r, err)
			}
		}
		report(b)
	})
	parallel := func(st *Store) func(b *testing.B) {
		return func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.SetParallelism(32) // 32 × GOMAXPROCS goroutines
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if r, err := st.Ingest(ctx, unique(), Source{}); err != nil || r.Duplicate {
						b.Errorf("Ingest = %+v, %v", r, err)
						return
					}
				}
			})
			report(b)
		}
	}
	b.Run("parallel", parallel(s))
	b.Run("parallel-unix", parallel(su))
	// Redis's share: the same mail parsed once, only the Message-ID varied.
	b.Run("store-only-parallel", func(b *testing.B) {
		parsed := mailparse.Parse(raw)
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m := *parsed
				m.MessageID = "bench-" + strconv.FormatInt(n.Add(1), 10) + "@mail.gmail.com"
				if r, err := s.IngestParsed(ctx, raw, &m, Source{}); err != nil || r.Duplicate {
					b.Errorf("IngestParsed = %+v, %v", r, err)
					return
				}
			}
		})
		report(b)
	})
}

// BenchmarkIngestBatch10KB measures the store's side of a FETCH batch: the
// 10 KB mail, parsed once (imapfetch parses on all cores before the
// store), each copy with its own Message-ID and bytes, handed to
// IngestBatch in batches of 1 (as Ingest), 10 and 100. It reports the CPU
// each mail costs in this process (go-µs/mail: building, encoding, the
// client) and in redis-server (redis-µs/mail, from /proc/<pid>/stat), and
// Redis's page faults per mail (memory touched for the first time), which
// depend less on how loaded the machine is than wall rates do. "always"
// runs Redis with appendfsync always: one fsync per script call.
//
//	go test -run '^$' -bench IngestBatch -benchtime 20000x ./tickets
func BenchmarkIngestBatch10KB(b *testing.B) {
	raw := benchMail(b)
	parsed := mailparse.Parse(raw)
	for _, cfg := range []struct {
		name  string
		batch int
		extra []string
	}{
		{"noaof-1", 1, nil},
		{"noaof-10", 10, nil},
		{"noaof-100", 100, nil},
		{"always-1", 1, []string{"appendonly yes", "appendfsync always"}},
		{"always-100", 100, []string{"appendonly yes", "appendfsync always"}},
	} {
		batch := cfg.batch
		b.Run(cfg.name, func(b *testing.B) {
			srv := redistest.Start(b, cfg.extra...)
			rdb := srv.Client(b)
			s := NewStore(rdb, Options{})
			ctx := context.Background()
			pid := rdb.InfoMap(ctx, "server").Val()["Server"]["process_id"]
			if pid == "" {
				b.Fatal("redis-server did not tell its process_id")
			}
			var n int
			mails := make([]BatchMail, 0, batch)
			b.SetBytes(int64(len(raw)))
			goCPU, redisCPU := processCPU(b, "self"), processCPU(b, pid)
			redisFaults := processFaults(b, pid)
			for b.Loop() {
				n++
				id := "bench-" + strconv.Itoa(n) + "@mail.gmail.com"
				m := *parsed
				m.MessageID = id
				mails = append(mails, BatchMail{Raw: bytes.Replace(raw, []byte("CAF-bench-0001@mail.gmail.com"), []byte(id), 1), Parsed: &m})
				if len(mails) == batch {
					for i, r := range s.IngestBatch(ctx, mails) {
						if r.Err != nil || r.Duplicate || r.Suppressed != "" {
							b.Fatalf("mail %d: %+v", i, r)
						}
					}
					mails = mails[:0]
				}
			}
			goCPU, redisCPU = processCPU(b, "self")-goCPU, processCPU(b, pid)-redisCPU
			redisFaults = processFaults(b, pid) - redisFaults
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mails/s")
			b.ReportMetric(goCPU.Seconds()*1e6/float64(b.N), "go-µs/mail")
			b.ReportMetric(redisCPU.Seconds()*1e6/float64(b.N), "redis-µs/mail")
			b.ReportMetric(float64(redisFaults)/float64(b.N), "redis-faults/mail")
		})
	}
}

// procStat returns the fields of /proc/<pid>/stat after the command name,
// which is in parentheses and may hold spaces: field 3 of the line is f[0].
func procStat(b *testing.B, pid string) []string {
	b.Helper()
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	return strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
}

// processFaults counts the page faults (minor: memory touched for the
// first time) of process pid. Each new page of stored mail costs one; on a
// virtual machine they are much of Redis's CPU per mail.
func processFaults(b *testing.B, pid string) int64 {
	n, _ := strconv.ParseInt(procStat(b, pid)[7], 10, 64)
	return n
}

// processCPU is the user and system CPU time process pid ("self" for this
// one) has used, from /proc/<pid>/stat.
func processCPU(b *testing.B, pid string) time.Duration {
	// utime and stime are the 14th and 15th fields of the line.
	f := procStat(b, pid)
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	// Linux counts them in clock ticks of 1/100 s (USER_HZ).
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
