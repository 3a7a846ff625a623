package tickets

import (
	"bytes"
	"context"
	"strconv"
	"sync/atomic"
	"testing"

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
