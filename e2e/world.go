// Package e2e runs mailgate as an operator does: the built binary, as a
// separate process (internal/mgproc), against a real redis-server and the
// fakes of Google (OAuth, Gmail IMAP, Gmail SMTP) and of a recipient's mail
// server from internal/fakeworld, which live in the calling process.
//
// The tests in this package need MG_INTEGRATION=1 (scripts/test sets
// it): they build the binary and run for tens of seconds. cmd/rssbench,
// which bench/rss.sh runs, uses the same world to measure the memory of
// `mailgate serve` with many accounts.
package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/internal/fakeworld"
	"github.com/mailgate/mailgate/internal/freeport"
)

// DKIMDomain is the domain the world holds a DKIM key for: accounts on it
// may go direct (signed) when they cannot go via Gmail.
const DKIMDomain = fakeworld.DKIMDomain

// Fakes are the outside world mailgate talks to.
type Fakes struct{ *fakeworld.World }

// StartFakes starts every fake on loopback, writing its files into dir.
func StartFakes(dir string) (*Fakes, error) {
	w, err := fakeworld.Start(fakeworld.Options{Dir: dir, DKIMAlgorithm: dkim.AlgoEd25519, DKIMSelector: "e2e"})
	if err != nil {
		return nil, err
	}
	return &Fakes{w}, nil
}

// Config is what varies between the configurations the tests write.
type Config struct {
	RedisURL      string
	RelayListen   string // host:port
	HTTPListen    string // host:port
	PollInterval  time.Duration
	LeaseTTL      time.Duration
	ShutdownGrace time.Duration
	LogLevel      string // default info
	Smarthost     string // relay.smarthost; default the fake MX
	Pprof         bool   // http.pprof: Go's profiles on /debug/pprof/
	HTTPToken     string // http.token
	GmailLimit    int    // relay.gmail_daily_limit; default Gmail's
}

// WriteConfig writes a mailgate configuration pointing at the fakes and
// returns its path.
func (f *Fakes) WriteConfig(name string, c Config) (string, error) {
	cfg := config.Defaults()
	f.Configure(cfg)
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Smarthost == "" {
		c.Smarthost = f.MX.Addr()
	}
	cfg.Redis.URL = c.RedisURL
	cfg.Fetch.PollInterval = config.Duration(c.PollInterval)
	cfg.Fetch.LeaseTTL = config.Duration(c.LeaseTTL)
	cfg.Fetch.BackoffMax = config.Duration(2 * time.Second)
	cfg.Relay.Listen = c.RelayListen
	cfg.Relay.Hostname = "relay.e2e.test"
	cfg.Relay.Smarthost = c.Smarthost
	cfg.Relay.RetrySchedule = []config.Duration{config.Duration(time.Second)}
	cfg.HTTP.Listen = c.HTTPListen
	cfg.HTTP.Pprof = c.Pprof
	cfg.HTTP.Token = c.HTTPToken
	if c.GmailLimit > 0 {
		cfg.Relay.GmailDailyLimit = c.GmailLimit
	}
	cfg.Log.Level = c.LogLevel
	cfg.ShutdownGrace = config.Duration(c.ShutdownGrace)
	y, err := cfg.YAML()
	if err != nil {
		return "", err
	}
	path := filepath.Join(f.Dir, name)
	return path, os.WriteFile(path, y, 0o600)
}

// FreeAddr returns a loopback address with a port free at the time of
// the call, for listeners the binary opens itself.
func FreeAddr() (string, error) { return freeport.Addr() }

// Memory is a process's resident memory in KiB, now and at its peak.
type Memory struct{ RSS, Peak int64 }

// ReadMemory reads VmRSS and VmHWM from /proc/<pid>/status (Linux).
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			m.RSS = n
		case "VmHWM":
			m.Peak = n
		}
	}
	if m.RSS == 0 {
		return m, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return m, sc.Err()
}
