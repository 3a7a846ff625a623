package main

import (
	"bytes"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/fakeoauth"
	"github.com/mailgate/mailgate/internal/redistest"
)

// config check --connect says which servers answered: here a real Redis
// and token endpoint do, and the IMAP host (a closed port) does not.
func TestConfigCheckConnect(t *testing.T) {
	rs := redistest.Start(t)
	google := fakeoauth.New()
	t.Cleanup(google.Close)
	closed := strings.TrimPrefix(strings.TrimSuffix(closedRedisURL(t), "/0"), "redis://")
	smtp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer smtp.Close()

	var out, errOut bytes.Buffer
	code := run([]string{"mailgate", "--redis-url", rs.URL,
		"--set", "google.imap_addr=" + closed, "--set", "google.smtp_addr=" + smtp.Addr().String(),
		"--set", "google.token_url=" + google.URL + "/token",
		"config", "check", "--connect"}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "google.imap_addr") {
		t.Errorf("exit %d, want 1 naming google.imap_addr\nstderr: %s", code, errOut.String())
	}
	for _, want := range []string{
		`redis\.url .*: answered PING`,
		`google\.imap_addr +` + regexp.QuoteMeta(closed) + `: no answer: .*refused`,
		`google\.smtp_addr +` + regexp.QuoteMeta(smtp.Addr().String()) + `: accepted a TCP connection`,
		`google\.token_url +.*/token: answered HTTP \d{3}`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("output does not match %q:\n%s", want, out.String())
		}
	}
}
