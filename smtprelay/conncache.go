package smtprelay

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// A connection to a server the relay is sending much mail to (the
// smarthost, a busy MX) is kept open between messages, as Postfix's
// connection cache does on demand: one message then costs MAIL, RCPT and
// DATA, not also the TCP and TLS handshakes, the greeting, EHLO, AUTH and
// QUIT. A lone message ends its session at once, as without a cache.
const (
	// cacheIdle: a session idle longer is closed rather than reused.
	// Servers wait five minutes or more for the next command (RFC 5321
	// section 4.5.3.2.7); a few seconds keeps us well inside that.
	cacheIdle = 5 * time.Second
	// cacheUses: a session is closed after this many messages, so that a
	// change of the server's DNS or certificate is seen.
	cacheUses = 100
	// cachePerServer: at most this many idle sessions are kept per server.
	cachePerServer = 16
	// cacheDemand: a session is kept when another message to the same
	// server is being sent, or began this recently: mail is flowing.
	cacheDemand = time.Second
)

// outSession is one outgoing SMTP session and what the cache knows of it.
type outSession struct {
	c     *smtp.Client
	raw   net.Conn
	stop  func() bool // unties raw from the context of its current use
	since time.Time   // when it was opened, then when last put back
	uses  int
}

// rebind ties the session to ctx: ending ctx (a shutdown past its grace)
// cuts it wherever it is.
func (s *outSession) rebind(ctx context.Context) {
	if s.stop != nil {
		s.stop()
	}
	raw := s.raw
	s.stop = context.AfterFunc(ctx, func() { raw.Close() })
}

// connCache holds idle sessions by server and credentials.
type connCache struct {
	mu     sync.Mutex
	idle   map[string][]*outSession
	flying map[string]int       // transactions under way, by key
	last   map[string]time.Time // when the last one began, by key
}

func newConnCache() *connCache {
	return &connCache{idle: map[string][]*outSession{}, flying: map[string]int{}, last: map[string]time.Time{}}
}

// cacheKey names the server and how we greet and log in to it: a session
// is reused only for the same.
func cacheKey(o dialOptions) string {
	user := ""
	if o.auth != nil {
		user = "auth"
	}
	return strings.Join([]string{o.addr, string(o.tlsMode), o.hostname, user}, "|")
}

// deliver runs one SMTP transaction with the server o names, on an idle
// session when the cache has one. A reused session that fails before the
// server took the message for anyone (it closed the connection meanwhile,
// or said 421) is dropped and the message sent at once on a new session:
// the retry that a deferral would make later.
func (cc *connCache) deliver(ctx context.Context, o dialOptions, from string, rcpts []string, data []byte) Result {
	if cc == nil {
		return deliverTo(ctx, o, from, rcpts, data)
	}
	key := cacheKey(o)
	s, flowing := cc.take(key)
	if s != nil {
		s.rebind(ctx)
		res := send(s.c, from, rcpts, data, o.sign)
		if !staleSession(res) {
			cc.put(key, s, res, o.timeouts, flowing)
			return res
		}
		s.stop()
		s.c.Close()
	}
	s, err := dialSession(ctx, o)
	if err != nil {
		cc.done(key)
		return failAllBy(rcpts, err)
	}
	res := send(s.c, from, rcpts, data, o.sign)
	cc.put(key, s, res, o.timeouts, flowing)
	return res
}

// take counts a transaction to key as begun and returns an idle session
// for it that is fresh enough, closing the stale ones it finds. flowing
// says whether another one began within cacheDemand.
func (cc *connCache) take(key string) (s *outSession, flowing bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	now := time.Now()
	flowing = now.Sub(cc.last[key]) < cacheDemand
	cc.last[key] = now
	cc.flying[key]++
	for list := cc.idle[key]; len(list) > 0; list = cc.idle[key] {
		s := list[len(list)-1]
		cc.idle[key] = list[:len(list)-1]
		if time.Since(s.since) < cacheIdle {
			return s, flowing
		}
		go s.c.Close()
	}
	return nil, flowing
}

// done counts a transaction to key as ended.
func (cc *connCache) done(key string) {
	cc.mu.Lock()
	cc.flying[key]--
	cc.mu.Unlock()
}

// put ends a transaction on s, and keeps s for the next message when mail
// to its server is flowing (flowing, or another transaction is under way)
// unless the transaction left it in an unknown state, it served cacheUses
// messages, or enough are kept; else it ends the session.
func (cc *connCache) put(key string, s *outSession, res Result, t Timeouts, flowing bool) {
	s.stop()
	s.uses++
	s.since = time.Now()
	cc.mu.Lock()
	cc.flying[key]--
	keep := (flowing || cc.flying[key] > 0) && s.uses < cacheUses && syncedAfter(res) && len(cc.idle[key]) < cachePerServer
	if keep {
		cc.idle[key] = append(cc.idle[key], s)
	}
	cc.mu.Unlock()
	if !keep {
		quit(s.c, t)
	}
}

// closeIdle ends, in the background, the sessions idle for cacheIdle.
func (cc *connCache) closeIdle(t Timeouts) {
	cc.mu.Lock()
	var old []*outSession
	for key, list := range cc.idle {
		keep := list[:0]
		for _, s := range list {
			if time.Since(s.since) < cacheIdle {
				keep = append(keep, s)
			} else {
				old = append(old, s)
			}
		}
		cc.idle[key] = keep
	}
	cc.mu.Unlock()
	for _, s := range old {
		go quit(s.c, t)
	}
}

// closeAll ends every idle session.
func (cc *connCache) closeAll(t Timeouts) {
	if cc == nil {
		return
	}
	cc.mu.Lock()
	idle := cc.idle
	cc.idle = map[string][]*outSession{}
	cc.mu.Unlock()
	for _, list := range idle {
		for _, s := range list {
			quit(s.c, t)
		}
	}
}

// syncedAfter: every answer in res is a reply of the server's (or no
// error), not a cut or timed-out connection, and none is 421 (the server
// is closing the session): the session can take the next MAIL.
func syncedAfter(res Result) bool {
	for _, rr := range res {
		if rr.Err == nil {
			continue
		}
		var se *smtp.SMTPError
		if !errors.As(rr.Err, &se) || se.Code == 421 {
			return false
		}
	}
	return true
}

// staleSession: a reused session delivered to nobody and every recipient
// failed by the connection (cut, timed out) or a 421, as a session the
// server closed while it was idle does.
func staleSession(res Result) bool {
	if len(res) == 0 {
		return false
	}
	for _, rr := range res {
		if rr.Outcome == Delivered || rr.Err == nil {
			return false
		}
		var se *smtp.SMTPError
		if errors.As(rr.Err, &se) && se.Code != 421 {
			return false
		}
	}
	return true
}
