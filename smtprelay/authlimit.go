package smtprelay

// This file limits password guessing on the relay's AUTH: a delay after
// each failure and a disconnect after a few on one connection, a failure
// budget per client address and per user name with a temporary lockout,
// and a bound on the bcrypt comparisons running at once, so that clients
// guessing cannot take every CPU from the helpdesk's real login.

import (
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// AuthLimits bound password guessing; zero fields take the defaults.
type AuthLimits struct {
	// MaxFailures is how many failed AUTH one connection may make; the
	// last one is answered 421 and the connection closed (3).
	MaxFailures int
	// FailureDelay is the wait before a failed AUTH is answered (1s).
	FailureDelay time.Duration
	// Budget is how many failed AUTH one client address (an IPv6 /64),
	// and one user name, may make within Lockout (10).
	Budget int
	// Lockout is how long a client over its budget is answered 421 4.7.0
	// (15 minutes).
	Lockout time.Duration
	// Checks is how many bcrypt comparisons may run at once (half the
	// CPUs, at least 1).
	Checks int
}

func (l AuthLimits) orDefault() AuthLimits {
	if l.MaxFailures <= 0 {
		l.MaxFailures = 3
	}
	if l.FailureDelay <= 0 {
		l.FailureDelay = time.Second
	}
	if l.Budget <= 0 {
		l.Budget = 10
	}
	if l.Lockout <= 0 {
		l.Lockout = 15 * time.Minute
	}
	if l.Checks <= 0 {
		l.Checks = max(1, runtime.GOMAXPROCS(0)/2)
	}
	return l
}

var (
	errLockedOut = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Too many failed logins from this address or for this user: try again later"}
	errTooManyFailures = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Too many failed logins on this connection: closing it"}
	errAuthBusy = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Temporary authentication failure: too many logins at once, try again"}
)

// dummyHash is a bcrypt hash of nothing useful, for constant-time refusal.
var dummyHash = "$2a$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z5m8o1LU6gTT2h8k1M0nKf6e"

// checkWait bounds how long a login waits for a free bcrypt slot.
const checkWait = 30 * time.Second

// authGuard keeps the failure counts of the whole server.
type authGuard struct {
	lim     AuthLimits
	slots   chan struct{} // one token per bcrypt comparison running
	suspect chan struct{} // one token: the check of a client that failed before
	now     func() time.Time

	mu      sync.Mutex
	compare func(hash, pass []byte) error // bcrypt's; tests count the calls
	fails   map[string]*failures          // by clientKey and userKey
}

// failures counts the failed logins of one client address or user name
// in a window of AuthLimits.Lockout from the first.
type failures struct {
	n      int
	since  time.Time
	locked time.Time // refused until then
}

func newAuthGuard(lim AuthLimits) *authGuard {
	lim = lim.orDefault()
	return &authGuard{lim: lim, slots: make(chan struct{}, lim.Checks), suspect: make(chan struct{}, 1),
		compare: bcrypt.CompareHashAndPassword, now: time.Now, fails: map[string]*failures{}}
}

// clientKey groups an IPv6 client by its /64, the block one host usually
// has to itself: counting single addresses would let it rotate through
// 2^64 of them.
func clientKey(ip netip.Addr) string {
	if ip.Is6() && !ip.Is4In6() {
		p, _ := ip.Prefix(64)
		return "ip " + p.String()
	}
	return "ip " + ip.String()
}

// userKey is a user name's key; names longer than any real one are cut,
// so that a client cannot grow the table with huge keys.
func userKey(user string) string { return "user " + truncate(user, 128) }

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// blocked reports whether a login from client for user is refused for
// now. A user over its budget is refused only to clients that have failed
// too: a helpdesk with a clean record still logs in while someone else
// guesses its password, and each guessing client gets one try.
func (g *authGuard) blocked(client, user string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	c := g.current(client, now)
	if c != nil && now.Before(c.locked) {
		return true
	}
	u := g.current(user, now)
	return user != "" && u != nil && now.Before(u.locked) && c != nil
}

// current returns key's count, nil once its window and lockout are over.
func (g *authGuard) current(key string, now time.Time) *failures {
	f := g.fails[key]
	if f != nil && now.Sub(f.since) >= g.lim.Lockout && !now.Before(f.locked) {
		delete(g.fails, key)
		return nil
	}
	return f
}

// failed counts a failure for each key and reports whether one of them
// is now over its budget.
func (g *authGuard) failed(keys ...string) (locked bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if len(g.fails) > 100_000 {
		g.prune(now) // guessing from very many addresses: drop what expired
	}
	for _, k := range keys {
		f := g.current(k, now)
		if f == nil {
			f = &failures{since: now}
			g.fails[k] = f
		}
		f.n++
		if f.n >= g.lim.Budget {
			f.locked = now.Add(g.lim.Lockout)
			locked = true
		}
	}
	return locked
}

func (g *authGuard) prune(now time.Time) {
	for k := range g.fails {
		g.current(k, now)
	}
}

// check compares pass with hash, waiting for a free slot first. A
// suspect client (one that failed before) first waits for the one suspect
// slot: however many guess at once, a client with a clean record waits
// for at most one of their checks, not for all of them.
func (g *authGuard) check(hash, pass string, suspect bool) (bool, error) {
	t := time.NewTimer(checkWait)
	defer t.Stop()
	if suspect {
		select {
		case g.suspect <- struct{}{}:
		case <-t.C:
			return false, errAuthBusy
		}
		defer func() { <-g.suspect }()
	}
	select {
	case g.slots <- struct{}{}:
	case <-t.C:
		return false, errAuthBusy
	}
	defer func() { <-g.slots }()
	g.mu.Lock()
	compare := g.compare
	g.mu.Unlock()
	return compare([]byte(hash), []byte(pass)) == nil, nil
}

// failedBefore reports whether client has failed logins on record.
func (g *authGuard) failedBefore(client string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.current(client, g.now()) != nil
}

// checkPassword is the AUTH PLAIN and LOGIN password check of x.
func (x *session) checkPassword(user, pass string) error {
	g := x.s.guard
	client := clientKey(x.ip)
	if !x.trusted && g.blocked(client, userKey(user)) {
		x.closeAfterReply()
		return x.refuse("AUTH", RejectAuth, errLockedOut, "user", user)
	}
	hash, known := x.access.Users[user]
	// Compare against a dummy hash for unknown users, so timing does
	// not tell which user names exist.
	if !known {
		hash = dummyHash
	}
	ok, err := g.check(hash, pass, x.authFailures > 0 || g.failedBefore(client))
	if err != nil {
		return x.refuse("AUTH", RejectAuth, errAuthBusy, "user", user)
	}
	if ok && known {
		x.user = user
		return nil
	}
	x.authFailures++
	// Clients in relay.allowed_networks may send without AUTH anyway:
	// their mistakes never lock anyone out.
	locked := !x.trusted && g.failed(client, userKey(user))
	time.Sleep(g.lim.FailureDelay)
	switch {
	case locked:
		x.closeAfterReply()
		return x.refuse("AUTH", RejectAuth, errLockedOut, "user", user)
	case x.authFailures >= g.lim.MaxFailures:
		x.closeAfterReply()
		return x.refuse("AUTH", RejectAuth, errTooManyFailures, "user", user)
	}
	return x.refuse("AUTH", RejectAuth, smtp.ErrAuthFailed, "user", user)
}

// lockedOut is the answer to a new session from a client over its
// failure budget: 421, and the connection is closed.
func (s *Server) lockedOut(c *smtp.Conn, ip netip.Addr, trusted bool) error {
	if trusted || !s.guard.blocked(clientKey(ip), "") {
		return nil
	}
	closeAfterReply(c)
	s.logRefusal(ip, "", "EHLO", RejectAuth, errLockedOut)
	s.tell(false, RejectAuth)
	return errLockedOut
}

func (x *session) closeAfterReply() { closeAfterReply(x.conn) }

// closeAfterReply ends the connection once the reply being made is
// written: go-smtp writes it after the session's method returns, then
// reads the next command, finds the end of input and closes.
func closeAfterReply(c *smtp.Conn) {
	nc := c.Conn()
	for {
		// The TCP connection under TLS (and under any other wrapper).
		w, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = w.NetConn()
	}
	if cr, ok := nc.(interface{ CloseRead() error }); ok && cr.CloseRead() == nil {
		return
	}
	nc.SetReadDeadline(time.Now()) // go-smtp then says 421 4.4.2 and closes
}
