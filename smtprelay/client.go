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

// isTemporary decides once, at the boundary, whether a failure is worth a
// retry: SMTP 4xx replies are (RFC 5321 section 4.2.1), 5xx are not, an
// envelope address no route can deliver is not (retrying cannot change
// it), and anything else that is not an SMTP reply (timeouts, refused or
// dropped connections, DNS trouble) is.
func isTemporary(err error) bool {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code < 500
	}
	var pe *permError
	return !errors.As(err, &pe) && !isAddressError(err)
}

// dialOptions say how to reach and greet one SMTP server.
type dialOptions struct {
	addr     string
	tlsMode  tlsmode.Mode
	tls      *tls.Config
	hostname string // our EHLO name
	auth     sasl.Client
	timeouts Timeouts
	// sign signs a message again after it was downgraded for a server
	// without SMTPUTF8; nil leaves it as downgraded.
	sign func([]byte) []byte
}

// dial connects, says EHLO as o.hostname, sets up TLS and authenticates.
// Ending ctx closes the connection.
func dial(ctx context.Context, o dialOptions) (*smtp.Client, error) {
	s, err := dialSession(ctx, o)
	if err != nil {
		return nil, err
	}
	return s.c, nil
}

// dialSession is dial for a session that may outlive ctx (connCache):
// rebind ties it to the context of its next use.
func dialSession(ctx context.Context, o dialOptions) (*outSession, error) {
	t := o.timeouts
	d := net.Dialer{Timeout: t.Connect}
	raw, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return nil, err
	}
	// Ending ctx (a shutdown past its grace) cuts the session wherever
	// it is; each step below has its own timeout.
	s := &outSession{raw: raw, since: time.Now()}
	s.rebind(ctx)
	var conn net.Conn = &writeDeadlineConn{Conn: raw, timeout: t.Command}
	conn.SetDeadline(time.Now().Add(t.Connect))
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
	// The greeting and EHLO are part of reaching the server; after
	// STARTTLS the client must say EHLO again (RFC 3207 section 4.2).
	c.CommandTimeout, c.SubmissionTimeout = t.Connect, t.Data
	if err := c.Hello(o.hostname); err != nil {
		c.Close()
		return nil, err
	}
	c.CommandTimeout = t.Command
	if o.auth != nil {
		if err := c.Auth(o.auth); err != nil {
			// go-smtp's client sends "*" after a failed AUTH and the
			// server counts it as an error: don't reuse this connection.
			c.Close()
			return nil, err
		}
	}
	s.c = c
	return s, nil
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

// deliverTo runs one SMTP transaction with the server o names: dial, then
// send. A server that cannot be reached fails every recipient alike.
func deliverTo(ctx context.Context, o dialOptions, from string, rcpts []string, data []byte) Result {
	c, err := dial(ctx, o)
	if err != nil {
		return failAllBy(rcpts, fmt.Errorf("%s: %w", o.addr, err))
	}
	res := send(c, from, rcpts, data, o.sign)
	quit(c, o.timeouts)
	return res
}

// send runs MAIL, RCPT for each recipient and DATA on c. Mail with
// non-ASCII addresses or header says SMTPUTF8 on MAIL FROM when c's server
// offers it, and is downgraded when it does not (sendDowngraded; sign
// signs it again).
func send(c *smtp.Client, from string, rcpts []string, data []byte, sign func([]byte) []byte) Result {
	var opts *smtp.MailOptions
	if needsSMTPUTF8(from, rcpts, data) {
		if ok, _ := c.Extension("SMTPUTF8"); !ok {
			return sendDowngraded(c, from, rcpts, data, sign)
		}
		opts = &smtp.MailOptions{UTF8: true}
	}
	return sendAs(c, from, rcpts, data, opts)
}

// sendAs runs the transaction with the MAIL parameters opts. Recipients
// refused at RCPT get their own result; a DATA failure applies to all the
// accepted ones.
func sendAs(c *smtp.Client, from string, rcpts []string, data []byte, opts *smtp.MailOptions) Result {
	if err := c.Mail(from, opts); err != nil {
		return failAllBy(rcpts, during("MAIL FROM", err))
	}
	res := failAll(rcpts, nil, Delivered)
	var accepted []int
	for i, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			res[i] = failed(r, during("RCPT TO", err))
			continue
		}
		accepted = append(accepted, i)
	}
	if len(accepted) == 0 {
		c.Reset()
		return res
	}
	if err := writeData(c, data); err != nil {
		for _, i := range accepted {
			res[i] = failed(rcpts[i], err)
		}
	}
	return res
}

// writeData sends data after DATA; the server's reply to the final dot
// is the error, if any.
func writeData(c *smtp.Client, data []byte) error {
	w, err := c.Data()
	if err != nil {
		return during("DATA", err)
	}
	// Accepted mail is normalised already; this covers mail queued
	// before, so that no lone CR ever leaves the relay.
	if _, err := bytes.NewReader(normalizeCR(data)).WriteTo(w); err != nil {
		w.Close()
		return during("sending the message", err)
	}
	return during("waiting for the reply to the final dot", w.Close())
}

// during says in which step err (a timeout, a cut connection) happened,
// for the queue's last error and the log. An SMTP reply says it itself.
func during(step string, err error) error {
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		return err
	}
	return fmt.Errorf("%s: %w", step, err)
}
