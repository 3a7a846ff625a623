package smtprelay

import (
	"net"
	"time"

	"github.com/emersion/go-smtp"
)

// Timeouts bound each wait for the server while the relay delivers a
// message (Gmail, an MX host, the smarthost). RFC 5321 section 4.5.3.2
// lists the longest a client should ever need: 5 minutes for the greeting
// and for each of MAIL and RCPT, 3 for each data block, 10 for the reply to
// the final dot. Those are written for any server on the Internet; the
// defaults here are shorter because the servers the relay talks to most
// (Gmail, a smarthost you run) answer in seconds, and a hung one should
// free its worker in minutes, not in a quarter of an hour.
type Timeouts struct {
	// Connect bounds reaching the server: the TCP connection, the TLS
	// handshake (and STARTTLS), the 220 greeting and EHLO. Default 30s:
	// a host that has not greeted in 30 seconds is down or blackholed, and
	// the next MX host (or the next try) is a better use of the worker.
	Connect time.Duration
	// Command bounds the reply to each other command (AUTH, MAIL, RCPT,
	// DATA) and each write of the message. Default 1m: Gmail and a
	// smarthost answer in well under a second; a minute leaves room for a
	// server that checks the recipient before answering.
	Command time.Duration
	// Data bounds the wait for the reply to the final dot, while the
	// server stores and scans the message. Default 2m. It is the longest,
	// and the one to raise with care in neither direction: giving up here
	// when the server did take the message sends it twice on the retry
	// (RFC 5321 section 4.5.3.2.6 says so), so it leaves room for content
	// filters that take tens of seconds on a large attachment.
	Data time.Duration
	// Quit bounds the wait for the reply to QUIT. Default 10s: by then the
	// outcome is known, and waiting longer changes nothing.
	Quit time.Duration
}

// DefaultTimeouts are the timeouts used for zero fields of Timeouts.
var DefaultTimeouts = Timeouts{Connect: 30 * time.Second, Command: time.Minute, Data: 2 * time.Minute, Quit: 10 * time.Second}

// orDefault fills the zero fields of t from DefaultTimeouts.
func (t Timeouts) orDefault() Timeouts {
	d := DefaultTimeouts
	if t.Connect <= 0 {
		t.Connect = d.Connect
	}
	if t.Command <= 0 {
		t.Command = d.Command
	}
	if t.Data <= 0 {
		t.Data = d.Data
	}
	if t.Quit <= 0 {
		t.Quit = d.Quit
	}
	return t
}

// try bounds a whole delivery try, as a last resort behind the timeouts
// of each step: a transaction of a few commands, twice (a Gmail refusal
// sends the same recipients another way in the same try).
func (t Timeouts) try() time.Duration {
	return 2 * (t.Connect + 4*t.Command + t.Data + t.Quit)
}

// writeDeadlineConn gives each write its own deadline. go-smtp sets one for
// each command but none while the message itself is written, so a server
// that stops reading mid-message would hold the worker until the try's
// context ends.
type writeDeadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *writeDeadlineConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// quit ends the session politely, waiting at most t.Quit for the reply,
// and closes the connection.
func quit(c *smtp.Client, t Timeouts) {
	c.CommandTimeout = t.Quit
	c.Quit()
	c.Close()
}
