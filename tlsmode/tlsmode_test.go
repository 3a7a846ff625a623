package tlsmode

import "testing"

func TestParseRoundTrips(t *testing.T) {
	for _, m := range modes {
		got, err := Parse(m.String())
		if err != nil || got != m {
			t.Errorf("Parse(%q) = %q, %v; want %q", m.String(), got, err, m)
		}
	}
	for _, bad := range []string{"", "ssl", "tls", "STARTTLS", " starttls"} {
		if got, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %q, want an error", bad, got)
		}
	}
}

func TestVerified(t *testing.T) {
	want := map[Mode]bool{Implicit: true, StartTLS: true, Opportunistic: false, Plain: false}
	for m, v := range want {
		if m.Verified() != v {
			t.Errorf("%s.Verified() = %v, want %v", m, !v, v)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST": true, "LocalHost:993": true,
		"127.0.0.1": true, "127.1.2.3:143": true, "::1": true, "[::1]": true, "[::1]:587": true,
		"imap.gmail.com": false, "imap.gmail.com:993": false, "10.0.0.1": false, "10.0.0.1:143": false,
		"localhost.example": false, "": false, "::": false,
	} {
		if got := IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}
