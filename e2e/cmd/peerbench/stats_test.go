package main

import (
	"bufio"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var ds []time.Duration
		for _, x := range v {
			ds = append(ds, time.Duration(x)*time.Millisecond)
		}
		return ds
	}
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{ms(7), 7 * time.Millisecond},
		{ms(30, 10, 20), 20 * time.Millisecond},     // unsorted, odd
		{ms(40, 10, 30, 20), 25 * time.Millisecond}, // even: mean of the middle two
		{ms(10, 1000, 12), 12 * time.Millisecond},   // one slow round does not move it
	} {
		in := append([]time.Duration(nil), tc.in...)
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Fatalf("median reordered its argument: %v, was %v", tc.in, in)
			}
		}
	}
}

func TestRatioIsMailgateRateOverPeerRate(t *testing.T) {
	// 1,000 messages: the peer in 2 s (500/s), mailgate in 0.5 s (2,000/s).
	peer, mg := 2*time.Second, 500*time.Millisecond
	if got := ratio(peer, mg); got != 4 {
		t.Errorf("ratio = %v, want 4 (mailgate 4 times as fast)", got)
	}
	if got, want := ratio(peer, mg), rate(1000, mg)/rate(1000, peer); got != want {
		t.Errorf("ratio %v is not mailgate's rate over the peer's, %v", got, want)
	}
	if ratio(0, mg) != 0 || ratio(peer, 0) != 0 {
		t.Error("a side that was not measured must give no ratio")
	}
}

// smtp-sink -c's real output (Postfix 3.7): a record per session, QUIT and
// final dot, each ending in a carriage return.
const sinkOutput = "sess=1 quit=0 mesg=0\rsess=1 quit=0 mesg=1\rsess=1 quit=1 mesg=1\r" +
	"sess=2 quit=1 mesg=1\rsess=2 quit=1 mesg=2\rsess=2 quit=2 mesg=2\r"

func TestSinkCountFollowsSmtpSinkOutput(t *testing.T) {
	sc := bufio.NewScanner(strings.NewReader("smtp-sink: warning: something\n" + sinkOutput))
	sc.Split(splitCR)
	var counts []int
	for sc.Scan() {
		if n, ok := parseSinkCount(sc.Text()); ok {
			counts = append(counts, n)
		}
	}
	want := []int{0, 1, 1, 1, 2, 2}
	if len(counts) != len(want) {
		t.Fatalf("counts %v, want %v", counts, want)
	}
	for i := range want {
		if counts[i] != want[i] {
			t.Fatalf("counts %v, want %v", counts, want)
		}
	}
	if _, ok := parseSinkCount("smtp-sink: fatal: bind 127.0.0.1:25: Address already in use"); ok {
		t.Error("a message without a counter counted")
	}
}

func TestParseProcStat(t *testing.T) {
	// proc(5): pid (comm) state ppid ... utime(14) stime(15) ...; a
	// command name may hold spaces and parentheses.
	line := "4242 (redis-server (x) *:0) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 5 0 100 0 0\n"
	got, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want { // (250 + 75) ticks of 10 ms
		t.Errorf("cpu = %v, want %v", got, want)
	}
	if _, err := parseProcStat("4242 (x) S 1 2"); err == nil {
		t.Error("a short line parsed")
	}
}

func TestTableShowsRatesRatioAndCPU(t *testing.T) {
	ms := time.Millisecond
	peer := &side{label: "mbsync", samples: []sample{
		{wall: 900 * ms, cpu: map[string]time.Duration{"mbsync": 200 * ms}},
		{wall: 1000 * ms, cpu: map[string]time.Duration{"mbsync": 100 * ms}},
		{wall: 5000 * ms, cpu: map[string]time.Duration{"mbsync": 100 * ms}},
	}}
	mg := &side{label: "`fetch`", samples: []sample{
		{wall: 4000 * ms, cpu: map[string]time.Duration{"mailgate": 3000 * ms, "redis-server": 1000 * ms}},
		{wall: 4100 * ms, cpu: map[string]time.Duration{"mailgate": 3100 * ms, "redis-server": 900 * ms}},
		{wall: 3900 * ms, cpu: map[string]time.Duration{"mailgate": 2900 * ms, "redis-server": 1100 * ms}},
	}}
	relay := &side{label: "Postfix", samples: []sample{{wall: 2000 * ms}}}
	var b strings.Builder
	printTable(&b, 1000, []row{{"IMAP → stored", peer, mg}, {"relay", relay, mg}})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header, a rule and 2 rows:\n%s", b.String())
	}
	// Medians: peer 1 s (1,000/s), mailgate 4 s (250/s): 0.25×;
	// mailgate 3,000 µs and Redis 1,000 µs per mail, mbsync 100 µs.
	want := "| IMAP → stored | mbsync | 1000 | `fetch` | 250 | 0.25× | 3000 + 1000 µs (mbsync 100 µs) |"
	if lines[2] != want {
		t.Errorf("row\n%s\nwant\n%s", lines[2], want)
	}
	if want := "| relay | Postfix | 500 | `fetch` | 250 | 0.50× | 3000 + 1000 µs |"; lines[3] != want {
		t.Errorf("row\n%s\nwant\n%s", lines[3], want)
	}
}
