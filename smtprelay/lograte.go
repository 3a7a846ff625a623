package smtprelay

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Refusal lines allowed per client address and window: enough to see what
// a helpdesk does wrong, too few for a client to flood the log.
const (
	logBurst  = 20
	logWindow = time.Minute
)

// logLimiter lets through logBurst lines per key and logWindow.
type logLimiter struct {
	now func() time.Time

	mu sync.Mutex
	m  map[string]*logCount
}

type logCount struct {
	n       int
	since   time.Time
	dropped int // lines not written since the last one written
}

func newLogLimiter() *logLimiter {
	return &logLimiter{now: time.Now, m: map[string]*logCount{}}
}

// allow reports whether a line for key may be written, how many were
// dropped since the last one, and whether it is the last of its window.
func (l *logLimiter) allow(key string) (ok bool, dropped int, last bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.m) > 10_000 {
		for k, c := range l.m {
			if now.Sub(c.since) >= logWindow && c.dropped == 0 {
				delete(l.m, k)
			}
		}
	}
	c := l.m[key]
	if c == nil {
		c = &logCount{since: now}
		l.m[key] = c
	}
	if now.Sub(c.since) >= logWindow {
		c.n, c.since = 0, now
	}
	if c.n >= logBurst {
		c.dropped++
		return false, 0, false
	}
	c.n++
	dropped, c.dropped = c.dropped, 0
	return true, dropped, c.n == logBurst
}

// refuse answers cmd with err: it tells ServerOptions.OnAccept the reason
// and logs one line (rate-limited per client). attrs add details, such as
// the user name of a failed AUTH.
func (x *session) refuse(cmd, reason string, err *smtp.SMTPError, attrs ...any) error {
	x.s.tell(false, reason)
	x.s.logRefusal(x.ip, x.user, cmd, reason, err, attrs...)
	return err
}

// logRefusal writes the line an admin (or fail2ban) reads to learn why a
// client was refused: its address, its AUTH user, the command, the reply.
// Passwords never reach it.
func (s *Server) logRefusal(ip netip.Addr, user, cmd, reason string, err *smtp.SMTPError, attrs ...any) {
	ok, dropped, last := s.logged.allow(clientKey(ip))
	if !ok {
		return
	}
	args := []any{"ip", ip.String()}
	if user != "" {
		args = append(args, "user", user)
	}
	for i := 0; i+1 < len(attrs); i += 2 {
		if v, isStr := attrs[i+1].(string); isStr {
			attrs[i+1] = printable(truncate(v, 128))
		}
	}
	args = append(args, attrs...)
	args = append(args, "cmd", cmd, "code", fmt.Sprintf("%d %d.%d.%d", err.Code, err.EnhancedCode[0], err.EnhancedCode[1], err.EnhancedCode[2]),
		"reason", reason, "reply", err.Message)
	if dropped > 0 {
		args = append(args, "not_logged", dropped)
	}
	if last {
		args = append(args, "note", fmt.Sprintf("further refusals of this client are not logged for up to %s", logWindow))
	}
	s.log.Warn("relay: refused", args...)
}
