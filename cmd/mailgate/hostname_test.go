package main

import (
	"net/textproto"
	"strings"
	"testing"
)

// TestShortHostnameWarns: a relay name without a dot is taken, but both
// `config check` and `serve` warn, naming relay.hostname; a fully
// qualified one gives no warning.
func TestShortHostnameWarns(t *testing.T) {
	code, _, stderr := mailgate(t, "--set", "relay.hostname=vm", "config", "check")
	if code != 0 || !strings.Contains(stderr, "warning: relay.hostname: \"vm\" is not a fully qualified domain name") {
		t.Errorf("config check with relay.hostname=vm: exit %d, stderr %q; want 0 and a warning naming relay.hostname", code, stderr)
	}
	code, _, stderr = mailgate(t, "--set", "relay.hostname=mail.acme.example", "config", "check")
	if code != 0 || strings.Contains(stderr, "warning") {
		t.Errorf("config check with a fully qualified relay.hostname: exit %d, stderr %q; want no warning", code, stderr)
	}

	e := newAccountsEnv(t)
	r := startDaemon(t, e, "relay.hostname=vm")
	if logs := r.logs.String(); !strings.Contains(logs, `relay.hostname: \"vm\" is not a fully qualified domain name`) {
		t.Errorf("serve log lacks the relay.hostname warning:\n%s", logs)
	}
	c, err := textproto.Dial("tcp", r.d.relayL.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, msg, err := c.ReadResponse(220); err != nil || !strings.HasPrefix(msg, "vm ") {
		t.Errorf("greeting %q, %v; want the configured name vm", msg, err)
	}
}
