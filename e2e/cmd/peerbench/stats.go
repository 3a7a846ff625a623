package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sample is one timed run of one side of a row: its wall clock and the CPU
// time (user + system) of the processes named in cpu ("mailgate",
// "redis-server", "mbsync").
type sample struct {
	wall time.Duration
	cpu  map[string]time.Duration
}

// side is one contender of a row: what it is, and its runs.
type side struct {
	label   string
	samples []sample
}

// row is one line of the table: a piece of work done by a peer and by
// mailgate over the same n mails. Several rows may share one peer side
// (Postfix unsigned against mailgate signing with RSA and with Ed25519).
type row struct {
	work     string
	peer, mg *side
}

// median is the middle value (the mean of the two middle ones for an even
// count); 0 for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// wall is the median wall clock of the side's runs.
func (s *side) wall() time.Duration {
	ds := make([]time.Duration, len(s.samples))
	for i, x := range s.samples {
		ds[i] = x.wall
	}
	return median(ds)
}

// cpu is the median CPU time of process name over the side's runs, and
// whether it was measured at all.
func (s *side) cpu(name string) (time.Duration, bool) {
	var ds []time.Duration
	for _, x := range s.samples {
		if d, ok := x.cpu[name]; ok {
			ds = append(ds, d)
		}
	}
	return median(ds), len(ds) > 0
}

// rate is messages per second for n messages in d; 0 when d is 0.
func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// ratio is mailgate's rate over the peer's (the same n on both sides, so
// the peer's time over mailgate's); 0 when either is unknown.
func ratio(peer, mg time.Duration) float64 {
	if peer <= 0 || mg <= 0 {
		return 0
	}
	return peer.Seconds() / mg.Seconds()
}

// cpuNames are the processes whose CPU per message the table shows, in
// its column order.
var cpuNames = []string{"mailgate", "redis-server"}

// printTable writes rows as a Markdown table of medians for n messages
// each, with mailgate's rate over the peer's and the CPU per message of
// the processes measured (mbsync's own in the peer's column).
func printTable(w io.Writer, n int, rows []row) {
	fmt.Fprintln(w, "| work | peer | msg/s | mailgate | msg/s | mailgate/peer | CPU per msg: mailgate + redis-server (peer) |")
	fmt.Fprintln(w, "|---|---|---:|---|---:|---:|---|")
	for _, r := range rows {
		pw, mw := r.peer.wall(), r.mg.wall()
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n",
			r.work, r.peer.label, fmtRate(rate(n, pw)), r.mg.label, fmtRate(rate(n, mw)),
			fmtRatio(ratio(pw, mw)), cpuCell(n, r))
	}
}

func fmtRate(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", r)
}

func fmtRatio(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", r)
}

// cpuCell is "170 + 45 µs (mbsync 20 µs)": mailgate's and redis-server's
// CPU per message, and the peer's when it was measured.
func cpuCell(n int, r row) string {
	var parts []string
	for _, name := range cpuNames {
		if d, ok := r.mg.cpu(name); ok {
			parts = append(parts, perMsg(d, n))
		}
	}
	cell := strings.Join(parts, " + ")
	if cell == "" {
		cell = "-"
	} else {
		cell += " µs"
	}
	if d, ok := r.peer.cpu("mbsync"); ok {
		cell += fmt.Sprintf(" (mbsync %s µs)", perMsg(d, n))
	}
	return cell
}

func perMsg(d time.Duration, n int) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(d.Microseconds())/float64(n))
}

// sinkCount matches smtp-sink -c's counters, written as
// "sess=3 quit=3 mesg=3\r" after every session, QUIT and final dot.
var sinkCount = regexp.MustCompile(`mesg=(\d+)`)

// parseSinkCount returns the message count of one smtp-sink -c record, and
// false for a record without one.
func parseSinkCount(record string) (int, bool) {
	m := sinkCount.FindStringSubmatch(record)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

// splitCR is a bufio.SplitFunc for smtp-sink -c's output, whose records
// end in a carriage return (they overwrite each other on a terminal), or
// a newline for its other messages.
func splitCR(data []byte, atEOF bool) (advance int, token []byte, err error) {
	for i, b := range data {
		if b == '\r' || b == '\n' {
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// clockTick is Linux's USER_HZ, the unit of /proc/<pid>/stat's times: 100
// on every architecture Go runs Linux on.
const clockTick = 100

// procCPU returns utime + stime of a running process from
// /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStat(string(b))
}

// parseProcStat reads utime and stime (fields 14 and 15, proc(5)) from a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may hold spaces and parentheses itself, so fields are counted from the
// last ')'.
func parseProcStat(line string) (time.Duration, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, fmt.Errorf("proc stat %q: no command name", line)
	}
	f := strings.Fields(line[i+1:])
	// f[0] is field 3 (state): utime is field 14, f[11].
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat %q: too few fields", line)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("proc stat %q: utime/stime not numbers", line)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}
