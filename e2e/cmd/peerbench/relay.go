package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/internal/freeport"
	"github.com/mailgate/mailgate/internal/mgproc"
)

// sessions is how many SMTP sessions smtp-source runs at once.
const sessions = 20

// nextHop is where a relay sends its mail: the counting smtp-sink (end to
// end), or for the accept rows a listener that never greets, so that
// neither relay's deliveries take CPU from its accepting (they wait on
// the greeting for minutes).
type nextHop struct {
	addr   string
	sink   *sink // nil for the silent listener
	listen net.Listener
}

func (w *world) hop(c *cleanups, counting bool) (*nextHop, error) {
	if !counting {
		// Never Accept: the kernel completes the handshakes into the
		// backlog and the clients wait for a greeting.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		c.add(func() { l.Close() })
		return &nextHop{addr: l.Addr().String(), listen: l}, nil
	}
	s, err := startSink(c)
	if err != nil {
		return nil, err
	}
	return &nextHop{addr: s.addr, sink: s}, nil
}

// relayRun measures one relay: start is called to make it ready (not
// timed) and returns the address smtp-source sends to and the pids whose
// CPU is measured. With a counting hop the time runs until the sink has
// counted every message, else until smtp-source has had 250 for each.
func (w *world) relayRun(hop *nextHop, addr string, pids map[string]int) (sample, error) {
	before := map[string]time.Duration{}
	for name, pid := range pids {
		d, err := procCPU(pid)
		if err != nil {
			return sample{}, err
		}
		before[name] = d
	}
	start := time.Now()
	if err := smtpSource(addr, w.n); err != nil {
		return sample{}, err
	}
	wall := time.Since(start)
	if hop.sink != nil {
		// Generous: a relay that loses mail must fail the run, not hang it.
		timeout := 2*time.Minute + time.Duration(w.n)*20*time.Millisecond
		if err := hop.sink.wait(w.n, timeout); err != nil {
			return sample{}, err
		}
		wall = time.Since(start)
	}
	s := sample{wall: wall, cpu: map[string]time.Duration{}}
	for name, pid := range pids {
		d, err := procCPU(pid)
		if err != nil {
			return sample{}, err
		}
		s.cpu[name] = d - before[name]
	}
	return s, nil
}

// smtpSource sends n messages of mailSize over sessions parallel sessions,
// one message per session as smtp-source does by default, and fails
// unless every one got its 250.
func smtpSource(addr string, n int) error {
	cmd := exec.Command(postfixTool("smtp-source"), "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(n),
		"-l", strconv.Itoa(mailSize), "-f", sender, "-t", recipient, "-M", "client.peers.example", addr)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		return fmt.Errorf("smtp-source to %s: %v: %s", addr, err, lastLines(string(out), 10))
	}
	return nil
}

// postfixTool finds smtp-source, smtp-sink and postfix, which Debian puts
// in /usr/sbin (not on every user's PATH).
func postfixTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return filepath.Join("/usr/sbin", name)
}

// sink is a running smtp-sink -c: it throws the mail away and counts it.
type sink struct {
	addr string
	mu   sync.Mutex
	n    int
	more chan struct{} // closed and replaced whenever n grows
	done chan struct{} // closed when smtp-sink's output ends
}

func startSink(c *cleanups) (*sink, error) {
	addr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	args := []string{"-c", addr, "256"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...) // it refuses to run as root
	}
	cmd := exec.Command(postfixTool("smtp-sink"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("smtp-sink: %w", err)
	}
	c.add(func() { cmd.Process.Kill(); cmd.Wait() })
	s := &sink{addr: addr, more: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stdout)
		sc.Split(splitCR)
		for sc.Scan() {
			if n, ok := parseSinkCount(sc.Text()); ok {
				s.mu.Lock()
				if n > s.n {
					s.n = n
					close(s.more)
					s.more = make(chan struct{})
				}
				s.mu.Unlock()
			}
		}
	}()
	// Up when it accepts a connection.
	for deadline := time.Now().Add(5 * time.Second); ; {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("smtp-sink on %s did not start: %v: %s", addr, err, stderr.Bytes())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits until the sink has counted n messages.
func (s *sink) wait(n int, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		got, more := s.n, s.more
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-more:
		case <-s.done:
			return fmt.Errorf("smtp-sink exited after counting %d of %d messages", got, n)
		case <-deadline:
			return fmt.Errorf("smtp-sink counted %d of %d messages in %s", got, n, timeout)
		}
	}
}

// mailgateRelay runs `mailgate serve` (relay and fetcher; no account is
// connected) on a fresh Redis with appendfsync always, sending to hop,
// DKIM-signing with dkimAlgo, and measures it.
func (w *world) mailgateRelay(counting bool, dkimAlgo string) (sample, error) {
	c := w.c
	defer c.runTo(c.mark())
	hop, err := w.hop(c, counting)
	if err != nil {
		return sample{}, err
	}
	rs, redisPid, err := w.redis(c, "appendonly yes", "appendfsync always")
	if err != nil {
		return sample{}, err
	}
	dir, err := os.MkdirTemp(w.dir, "serve-")
	if err != nil {
		return sample{}, err
	}
	c.add(func() { os.RemoveAll(dir) })
	listen, err := freeport.Addr()
	if err != nil {
		return sample{}, err
	}
	cfg, err := w.writeConfig(dir, rs, relayOpts{listen: listen, smarthost: hop.addr, dkimAlgo: dkimAlgo})
	if err != nil {
		return sample{}, err
	}
	p, err := mgproc.StartServe(w.bin, cfg, filepath.Join(dir, "serve.log"))
	if err != nil {
		return sample{}, err
	}
	c.add(func() {
		if p.Exited() {
			return
		}
		p.Signal(syscall.SIGTERM)
		if _, err := p.Wait(10 * time.Second); err != nil {
			p.Kill()
		}
	})
	if err := p.WaitLog("mailgate serving", 30*time.Second); err != nil {
		return sample{}, fmt.Errorf("%w\n%s", err, lastLines(p.Log(), 20))
	}
	s, err := w.relayRun(hop, listen, map[string]int{"mailgate": p.Pid(), "redis-server": redisPid})
	if err != nil {
		return sample{}, fmt.Errorf("mailgate relay: %w\nserve's log:\n%s", err, lastLines(p.Log(), 20))
	}
	return s, nil
}

// postfixRelay runs a private Postfix instance (its own config, queue on
// disk, listener on a free port; the system's Postfix is not touched)
// relaying everything to hop, and measures it.
func (w *world) postfixRelay(counting bool) (sample, error) {
	c := w.c
	defer c.runTo(c.mark())
	hop, err := w.hop(c, counting)
	if err != nil {
		return sample{}, err
	}
	pf, err := startPostfix(c, w.dir, hop.addr)
	if err != nil {
		return sample{}, err
	}
	s, err := w.relayRun(hop, pf.addr, nil)
	if err != nil {
		return sample{}, fmt.Errorf("postfix: %w\nPostfix's log:\n%s", err, lastLines(pf.log(), 20))
	}
	return s, nil
}

// postfix is a private Postfix instance.
type postfix struct {
	dir, addr string
}

func (p *postfix) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}

func (p *postfix) run(args ...string) error {
	out, err := exec.Command(postfixTool(args[0]), args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s\n%s", strings.Join(args, " "), err, out, lastLines(p.log(), 10))
	}
	return nil
}

// startPostfix writes a config directory under base, as the relay's
// Postfix null-client test does but with an SMTP listener on a free
// loopback port, mail for any domain relayed to relayhost (clients on
// 127.0.0.0/8 are in mynetworks), and starts it. Defaults otherwise,
// queue fsync included.
func startPostfix(c *cleanups, base, relayhost string) (*postfix, error) {
	dir, err := os.MkdirTemp(base, "postfix-")
	if err != nil {
		return nil, err
	}
	c.add(func() { os.RemoveAll(dir) })
	// Postfix daemons run as the postfix user: let it reach the spool.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	for _, d := range []string{"spool", "data"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if out, err := exec.Command("chown", "postfix", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("chown postfix: %w: %s", err, out)
	}
	master, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		// Installed with "No configuration": the shipped default.
		if master, err = os.ReadFile("/usr/share/postfix/master.cf.dist"); err != nil {
			return nil, fmt.Errorf("no master.cf to start from: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "master.cf"), master, 0o644); err != nil {
		return nil, err
	}
	addr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(relayhost)
	main := strings.Join([]string{
		"compatibility_level = 3.6",
		"queue_directory = " + filepath.Join(dir, "spool"),
		"data_directory = " + filepath.Join(dir, "data"),
		"mail_owner = postfix", "setgid_group = postdrop",
		"myhostname = postfix.peers.example", "mydomain = peers.example", "myorigin = $mydomain",
		"inet_interfaces = 127.0.0.1", "inet_protocols = ipv4", "mydestination =",
		"mynetworks = 127.0.0.0/8", "alias_maps =", "alias_database =",
		"relayhost = [" + host + "]:" + port,
		"maillog_file = " + filepath.Join(dir, "maillog"), "maillog_file_prefixes = " + dir,
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(main), 0o644); err != nil {
		return nil, err
	}
	p := &postfix{dir: dir, addr: addr}
	for _, args := range [][]string{
		{"postconf", "-c", dir, "-F", "*/*/chroot = n"},
		// The listener on port 25 becomes one on addr.
		{"postconf", "-c", dir, "-M#", "smtp/inet"},
		{"postconf", "-c", dir, "-M", addr + "/inet = " + addr + " inet n - n - - smtpd"},
		{"postfix", "-c", dir, "start"},
	} {
		if err := p.run(args...); err != nil {
			return nil, err
		}
	}
	c.add(func() { p.stop() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("postfix on %s did not listen: %v\n%s", addr, err, lastLines(p.log(), 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops the instance and waits until its master has gone, so its
// directory can be removed; a master that does not go is aborted.
func (p *postfix) stop() {
	p.run("postfix", "-c", p.dir, "stop")
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		if exec.Command(postfixTool("postfix"), "-c", p.dir, "status").Run() != nil {
			return // not running
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.run("postfix", "-c", p.dir, "abort")
}
