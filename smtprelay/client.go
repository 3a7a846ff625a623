package smtprelay

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/tlsmode"
)

// attempt is what one SMTP transaction did for each recipient.
type attempt struct {
	delivered []string
	temp      map[string]error // try these again later
	perm      map[string]error // bounce these
}

func newAttempt() *attempt {
	return &attempt{temp: map[string]error{}, perm: map[string]error{}}
}

// failAll records err for every recipient, as temporary or permanent.
func (a *attempt) failAll(rcpts []string, err error) {
	for _, r := range rcpts {
		if isTemporary(err) {
			a.temp[r] = err
		} else {
			a.perm[r] = err
		}
	}
}

// merge adds b's results to a.
func (a *attempt) merge(b *attempt) {
	a.delivered = append(a.delivered, b.delivered...)
	for k, v := range b.temp {
		a.temp[k] = v
	}
	for k, v := range b.perm {
		a.perm[k] = v
	}
}

// isTemporary decides once, at the boundary, whether a failure is worth a
// retry: SMTP 4xx replies are (RFC 5321 section 4.2.1), 5xx are not, and
// anything that is not an SMTP reply (timeouts, refused or dropped
// connections, DNS trouble) is.
func isTemporary(err error) bool {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code < 500
	}
	var pe *permError
	return !errors.As(err, &pe)
}

// dialOptions say how to reach and greet one SMTP server.
type dialOptions struct {
	addr     string
	tlsMode  tlsmode.Mode
	tls      *tls.Config
	hostname string // our EHLO name
	auth     sasl.Client
	timeout  time.Duration
}

// dial connects, says EHLO as o.hostname, sets up TLS and authenticates.
func dial(ctx context.Context, o dialOptions) (*smtp.Client, error) {
	d := net.Dialer{Timeout: o.timeout}
	conn, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return nil, err
	}
	// Ending ctx (a shutdown past its grace) cuts the session wherever
	// it is; each step below has its own timeout.
	context.AfterFunc(ctx, func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(o.timeout))
	switch o.tlsMode {
	case tlsmode.Implicit:
		conn = tls.Client(conn, tlsFor(o))
	case tlsmode.StartTLS, tlsmode.Opportunistic:
		conn, err = startTLS(conn, o)
		if err != nil {
			conn.Close()
			return nil, err
		}
	}
	conn.SetDeadline(time.Time{}) // go-smtp sets one per command
	c := smtp.NewClient(conn)
	c.CommandTimeout, c.SubmissionTimeout = o.timeout, 3*o.timeout
	// After STARTTLS the client must say EHLO again (RFC 3207 section 4.2).
	if err := c.Hello(o.hostname); err != nil {
		c.Close()
		return nil, err
	}
	if o.auth != nil {
		if err := c.Auth(o.auth); err != nil {
			// go-smtp's client sends "*" after a failed AUTH and the
			// server counts it as an error: don't reuse this connection.
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// startTLS runs the plaintext part of the session (greeting, EHLO,
// STARTTLS) itself and returns the encrypted connection, replaying a
// greeting for go-smtp's client to read. go-smtp only offers STARTTLS
// with its own EHLO name "localhost", which MX hosts may refuse; mail
// servers must greet with their own name (RFC 5321 section 4.1.1.1).
//
// In opportunistic mode (RFC 7435, MX delivery) a server without
// STARTTLS gets plaintext, and its certificate is not required to verify:
// most MX certificates don't match the MX name, and refusing them would
// only push the mail to plaintext.
func startTLS(conn net.Conn, o dialOptions) (net.Conn, error) {
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return conn, err
	}
	id, err := tp.Cmd("EHLO %s", o.hostname)
	if err != nil {
		return conn, err
	}
	tp.StartResponse(id)
	_, msg, err := tp.ReadResponse(250)
	tp.EndResponse(id)
	if err != nil {
		return conn, err
	}
	offered := false
	for _, line := range strings.Split(msg, "\n") {
		if strings.EqualFold(strings.TrimSpace(line), "STARTTLS") {
			offered = true
		}
	}
	if !offered {
		if o.tlsMode == tlsmode.Opportunistic {
			return &replayConn{Conn: conn, pending: []byte("220 " + o.addr + " ESMTP\r\n")}, nil
		}
		return conn, errors.New("server does not offer STARTTLS")
	}
	id, err = tp.Cmd("STARTTLS")
	if err != nil {
		return conn, err
	}
	tp.StartResponse(id)
	_, _, err = tp.ReadResponse(220)
	tp.EndResponse(id)
	if err != nil {
		return conn, fmt.Errorf("STARTTLS: %w", err)
	}
	cfg := tlsFor(o)
	if o.tlsMode == tlsmode.Opportunistic {
		cfg.InsecureSkipVerify = true
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return conn, fmt.Errorf("STARTTLS handshake: %w", err)
	}
	return &replayConn{Conn: tc, pending: []byte("220 " + o.addr + " ESMTP\r\n")}, nil
}

// tlsFor returns a copy of o's TLS config naming the server to verify.
func tlsFor(o dialOptions) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.tls != nil {
		cfg = o.tls.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(o.addr)
	}
	return cfg
}

// replayConn hands out pending bytes before reading from Conn.
type replayConn struct {
	net.Conn
	pending []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// send runs MAIL, RCPT for each recipient and DATA on c. Recipients
// refused at RCPT get their own result; a DATA failure applies to all the
// accepted ones.
func send(c *smtp.Client, from string, rcpts []string, data []byte) *attempt {
	a := newAttempt()
	if err := c.Mail(from, nil); err != nil {
		a.failAll(rcpts, err)
		return a
	}
	var accepted []string
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			a.failAll([]string{r}, err)
			continue
		}
		accepted = append(accepted, r)
	}
	if len(accepted) == 0 {
		c.Reset()
		return a
	}
	w, err := c.Data()
	if err != nil {
		a.failAll(accepted, err)
		return a
	}
	if _, err := bytes.NewReader(data).WriteTo(w); err != nil {
		w.Close()
		a.failAll(accepted, err)
		return a
	}
	if err := w.Close(); err != nil {
		a.failAll(accepted, err)
		return a
	}
	a.delivered = append(a.delivered, accepted...)
	return a
}
