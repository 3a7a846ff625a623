package smtprelay

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// TestBareCRNeverEndsData: a message with "\r.\r" in its body (a line
// "." between lone CRs, which a server that takes a lone CR for a line end
// would read as the end of the data) is queued with CRLF in place of each
// lone CR, and on the wire the "." line is dot-stuffed: the data ends only
// at the relay's own final dot, and the line after it arrives as text.
func TestBareCRNeverEndsData(t *testing.T) {
	e := startRelay(t, ServerOptions{AllowedNetworks: loopback})
	converse(t, e.addr, []smtpLine{
		{"EHLO helpdesk.test", 250, ""},
		{"MAIL FROM:<support@acme.test>", 250, ""},
		{"RCPT TO:<alice@customer.test>", 250, ""},
		{"DATA", 354, ""},
		{"From: support@acme.test\r\nSubject: smuggle\r\n\r\nhello\r\n\r.\rMAIL FROM:<ceo@bank.example>\r\n.", 250, "queued as"},
		{"QUIT", 221, ""},
	})
	ms, err := e.q.List(context.Background(), 10)
	if err != nil || len(ms) != 1 {
		t.Fatalf("queue %v, %v", ms, err)
	}
	m, err := e.q.Get(context.Background(), ms[0].ID, true)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bytes.ReplaceAll(m.Data, []byte("\r\n"), nil), []byte("\r")) {
		t.Fatalf("queued message keeps a lone CR:\n%q", m.Data)
	}
	if !bytes.Contains(m.Data, []byte("hello\r\n\r\n.\r\nMAIL FROM:<ceo@bank.example>\r\n")) {
		t.Fatalf("queued body %q, want each lone CR made CRLF", m.Data)
	}

	// What a downstream server reads: the "." line dot-stuffed, one end
	// of data.
	wire := captureData(t, m.Data)
	if !strings.Contains(wire, "\r\n..\r\nMAIL FROM:<ceo@bank.example>\r\n") || strings.Count(wire, "\r\n.\r\n") != 1 || !strings.HasSuffix(wire, "\r\n.\r\n") {
		t.Errorf("DATA on the wire %q: want the dot line stuffed and one end of data", wire)
	}
	// Mail queued before normalisation is normalised when sent.
	if wire := captureData(t, []byte("Subject: old\r\n\r\nhello\r.\rQUIT\r\n")); strings.Count(wire, "\r\n.\r\n") != 1 || strings.Contains(strings.ReplaceAll(wire, "\r\n", ""), "\r") {
		t.Errorf("old queued mail on the wire %q: want no lone CR and one end of data", wire)
	}
}

// captureData sends data through send to a scripted server and returns the
// raw bytes it read after DATA, final dot included.
func captureData(t *testing.T, data []byte) string {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	got := make(chan string, 1)
	go func() {
		defer server.Close()
		br := bufio.NewReader(server)
		server.Write([]byte("220 mx.test ESMTP\r\n"))
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				got <- ""
				return
			}
			switch cmd := strings.ToUpper(strings.Fields(line)[0]); cmd {
			case "EHLO":
				server.Write([]byte("250 mx.test\r\n"))
			case "DATA":
				server.Write([]byte("354 go ahead\r\n"))
				var raw strings.Builder
				for !strings.HasSuffix(raw.String(), "\r\n.\r\n") {
					l, err := br.ReadString('\n')
					if err != nil {
						got <- raw.String()
						return
					}
					raw.WriteString(l)
				}
				server.Write([]byte("250 ok\r\n"))
				got <- raw.String()
			case "QUIT":
				server.Write([]byte("221 bye\r\n"))
				return
			default:
				server.Write([]byte("250 ok\r\n"))
			}
		}
	}()
	c := smtp.NewClient(client)
	if err := c.Hello("relay.test"); err != nil {
		t.Fatal(err)
	}
	res := send(c, "support@acme.test", []string{"alice@customer.test"}, data, nil)
	if res[0].Outcome != Delivered {
		t.Fatalf("send: %+v", res)
	}
	c.Quit()
	return <-got
}
