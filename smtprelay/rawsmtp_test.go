package smtprelay

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// rawConn speaks SMTP line by line, so that tests see the exact replies.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawConn{t: t, c: c, br: bufio.NewReader(c)}
	r.reply() // greeting
	return r
}

// reply reads one reply, all its lines; "" when the server closed.
func (r *rawConn) reply() string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var lines []string
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			return strings.Join(lines, "\n")
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

// cmd sends line and returns the reply.
func (r *rawConn) cmd(line string) string {
	r.t.Helper()
	if _, err := r.c.Write([]byte(line + "\r\n")); err != nil {
		return ""
	}
	return r.reply()
}

// closed reports whether the server has closed the connection.
func (r *rawConn) closed() bool {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := r.br.ReadByte()
	return err != nil
}

// send runs MAIL, RCPT and DATA with the message msg (LF line ends are
// sent as CRLF) and returns the reply to the final dot.
func (r *rawConn) send(from, to, msg string) string {
	r.t.Helper()
	if rep := r.cmd("MAIL FROM:<" + from + ">"); !strings.HasPrefix(rep, "250") {
		return rep
	}
	if rep := r.cmd("RCPT TO:<" + to + ">"); !strings.HasPrefix(rep, "250") {
		return rep
	}
	if rep := r.cmd("DATA"); !strings.HasPrefix(rep, "354") {
		return rep
	}
	return r.cmd(strings.ReplaceAll(strings.TrimSuffix(msg, "\n"), "\n", "\r\n") + "\r\n.")
}
