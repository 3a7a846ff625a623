package main

import (
	"net/netip"
	"strings"
	"testing"
)

// TestRelayExposure: the relay may listen without TLS or AUTH only on this
// machine, and "LOCALHOST" is this machine as much as "localhost" is.
func TestRelayExposure(t *testing.T) {
	open := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	for _, listen := range []string{"127.0.0.1:2525", "[::1]:2525", "localhost:2525", "LOCALHOST:2525"} {
		if err := checkRelayExposure(listen, false, true, open); err != nil {
			t.Errorf("checkRelayExposure(%s) = %v, want nil: loopback is not exposed", listen, err)
		}
	}
	if err := checkRelayExposure("0.0.0.0:2525", false, true, nil); err == nil || !strings.Contains(err.Error(), "in clear") {
		t.Errorf("users without TLS on all interfaces: %v, want a refusal", err)
	}
	if err := checkRelayExposure("192.0.2.1:2525", true, false, open); err == nil || !strings.Contains(err.Error(), "whole Internet") {
		t.Errorf("0.0.0.0/0 without AUTH on a public address: %v, want a refusal", err)
	}
}
