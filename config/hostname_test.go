package config

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestRelayHostname: unset, the relay takes the machine's fully qualified
// name; a name without a dot, configured or found, gives a warning that
// names relay.hostname.
func TestRelayHostname(t *testing.T) {
	hosts := map[string]string{"vm": "vm.corp.example.", "box": "box."} // as /etc/hosts would answer
	names := func(host string) SystemNames {
		return SystemNames{
			Hostname: func() (string, error) { return host, nil },
			LookupCNAME: func(_ context.Context, h string) (string, error) {
				if c, ok := hosts[h]; ok {
					return c, nil
				}
				return "", errors.New("no such host")
			},
		}
	}
	for _, tc := range []struct {
		configured, host, want string
		warn                   bool
	}{
		{"", "vm", "vm.corp.example", false}, // the canonical name of the short one
		{"", "box", "box", true},             // no FQDN anywhere: warned
		{"", "lonely", "lonely", true},       // not resolvable: warned
		{"", "mx1.example.org", "mx1.example.org", false},
		{"mail.acme.example", "vm", "mail.acme.example", false}, // configured wins
		{"relay", "vm", "relay", true},                          // configured, but short
	} {
		c := Defaults()
		c.Relay.Hostname = tc.configured
		got, warning := c.RelayHostname(names(tc.host))
		if got != tc.want || (warning != "") != tc.warn {
			t.Errorf("relay.hostname %q, host %q: %q, warning %q; want %q, warning %v", tc.configured, tc.host, got, warning, tc.want, tc.warn)
		}
		if tc.warn && !strings.Contains(warning, "relay.hostname") {
			t.Errorf("warning %q does not name relay.hostname", warning)
		}
	}
}
