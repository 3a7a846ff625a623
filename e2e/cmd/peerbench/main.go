// Command peerbench measures mailgate side by side with the tools people
// run instead, on the same machine in the same run: isync's mbsync
// pulling IMAP into a Maildir against `mailgate fetch` turning the same
// mailbox into tickets, and Postfix against mailgate's relay, accepting
// and relaying end to end to a counting smtp-sink. It prints a Markdown
// table of medians over interleaved rounds with mailgate's rate over the
// peer's per row: absolute figures move from machine to machine, the
// ratio much less. bench/peers.sh installs the tools, builds the binaries
// and runs it.
//
// It is a program, not a `go test`: it runs for minutes, prints a report,
// and runs Dovecot (dovecottest.Run), Redis (redistest.Run) and the fake
// Google itself, outside any test. mailgate is driven only through its
// binary, configuration file and commands, so the benchmark keeps
// measuring whatever the code of the day does.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

func main() {
	bin := flag.String("mailgate", "", "the mailgate `BINARY` to measure")
	dir := flag.String("dir", "", "work `DIR` on disk (ext4): Redis files, Postfix queues, the durable Maildirs")
	tmpfs := flag.String("tmpfs", "", "`DIR` on tmpfs for the non-durable Maildirs")
	n := flag.Int("n", 10000, "mails in the mailbox, and messages per relay run")
	rounds := flag.Int("rounds", 3, "interleaved rounds of every run; the table shows medians")
	flag.Parse()
	if *bin == "" || *dir == "" || *tmpfs == "" || *n < 1 || *rounds < 1 {
		fmt.Fprintln(os.Stderr, "usage: peerbench -mailgate BINARY -dir DISKDIR -tmpfs TMPFSDIR [-n 10000] [-rounds 3]")
		os.Exit(2)
	}

	var c cleanups
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "peerbench: %s: stopping everything it started\n", s)
		c.run()
		os.Exit(1)
	}()
	err := run(&c, *bin, *dir, *tmpfs, *n, *rounds)
	c.run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "peerbench: %v\n", err)
		os.Exit(1)
	}
}

func run(c *cleanups, bin, dir, tmpfs string, n, rounds int) error {
	w, err := startWorld(c, bin, dir, tmpfs, n)
	if err != nil {
		return err
	}
	var (
		mbsyncTmpfs  = &side{label: "mbsync, Maildir on tmpfs, `FSync no`"}
		fetchNoAOF   = &side{label: "`fetch`, Redis `appendonly no`"}
		mbsyncFsync  = &side{label: "mbsync, Maildir on disk, `FSync yes`"}
		fetchAlways  = &side{label: "`fetch`, Redis `appendfsync always`"}
		postfixIn    = &side{label: "Postfix, queue on disk"}
		relayIn      = &side{label: "`serve` relay, Redis `appendfsync always`"}
		postfixOut   = &side{label: "Postfix, unsigned"}
		relayOut     = &side{label: "`serve` relay, unsigned"}
		relayRSA     = &side{label: "`serve` relay, DKIM RSA-2048"}
		relayEd25519 = &side{label: "`serve` relay, DKIM Ed25519"}
	)
	rows := []row{
		{"IMAP → stored, no durability", mbsyncTmpfs, fetchNoAOF},
		{"IMAP → stored, durable", mbsyncFsync, fetchAlways},
		{"relay accept, 250 once on disk", postfixIn, relayIn},
		{"relay end to end, unsigned", postfixOut, relayOut},
		{"relay end to end, DKIM RSA-2048", postfixOut, relayRSA},
		{"relay end to end, DKIM Ed25519", postfixOut, relayEd25519},
	}
	type job struct {
		s   *side
		run func() (sample, error)
	}
	// Pairs, peer first; every other round runs each pair mailgate first,
	// so that neither side always follows the same work.
	pairs := [][]job{
		{{mbsyncTmpfs, func() (sample, error) { return w.mbsync(tmpfs, false) }},
			{fetchNoAOF, func() (sample, error) { return w.fetch("appendonly no") }}},
		{{mbsyncFsync, func() (sample, error) { return w.mbsync(dir, true) }},
			{fetchAlways, func() (sample, error) { return w.fetch("appendonly yes", "appendfsync always") }}},
		{{postfixIn, func() (sample, error) { return w.postfixRelay(false) }},
			{relayIn, func() (sample, error) { return w.mailgateRelay(false, "") }}},
		{{postfixOut, func() (sample, error) { return w.postfixRelay(true) }},
			{relayOut, func() (sample, error) { return w.mailgateRelay(true, "") }},
			{relayRSA, func() (sample, error) { return w.mailgateRelay(true, "rsa") }},
			{relayEd25519, func() (sample, error) { return w.mailgateRelay(true, "ed25519") }}},
	}
	for r := range rounds {
		for _, pair := range pairs {
			order := pair
			if r%2 == 1 {
				order = append([]job{}, pair[1:]...)
				order = append(order, pair[0])
			}
			for _, j := range order {
				s, err := j.run()
				if err != nil {
					return fmt.Errorf("round %d, %s: %w", r+1, j.s.label, err)
				}
				j.s.samples = append(j.s.samples, s)
				fmt.Fprintf(os.Stderr, "peerbench: round %d/%d: %-45s %8.0f msg/s\n", r+1, rounds, j.s.label, rate(n, s.wall))
			}
		}
	}
	fmt.Printf("\n%d mails/messages of %d KB per run, medians of %d rounds; wall clock includes process start and login.\n\n", n, mailSize/1024, rounds)
	printTable(os.Stdout, n, rows)
	fmt.Println("\nmailgate/peer: mailgate's rate over the peer's (above 1: mailgate is faster). CPU per message: user + system time, median of the rounds;" +
		" mailgate and mbsync measured from their exit status (fetch) or /proc (serve), redis-server from /proc, in 10 ms ticks.")
	return nil
}

// cleanups are undo functions, run last first, once each: what a
// measurement started is undone at its end, and everything still running
// when the program ends or is signalled (Postfix daemonizes: it does not
// die with us).
type cleanups struct {
	mu  sync.Mutex
	fns []func()
}

func (c *cleanups) add(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, f)
}

// mark is where the cleanups stand now: runTo(mark) undoes what was
// added since, e.g. at the end of one measurement.
func (c *cleanups) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.fns)
}

func (c *cleanups) run() { c.runTo(0) }

func (c *cleanups) runTo(mark int) {
	for {
		c.mu.Lock()
		if len(c.fns) <= mark {
			c.mu.Unlock()
			return
		}
		f := c.fns[len(c.fns)-1]
		c.fns = c.fns[:len(c.fns)-1]
		c.mu.Unlock()
		f()
	}
}
