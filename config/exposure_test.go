package config

import (
	"strings"
	"testing"
)

// TestRelayExposure: each way the relay can be reached, with the keys the
// refusal must name (none: accepted).
func TestRelayExposure(t *testing.T) {
	tlsOn := func(r *Relay) { r.TLSCert, r.TLSKey = "cert.pem", "key.pem" }
	users := func(r *Relay) { r.Users = []RelayUser{{Name: "helpdesk", PasswordHash: "$2a$10$x"}} }
	tests := []struct {
		name   string
		listen string
		tls    string // relay.listen_tls
		nets   []string
		setup  []func(*Relay)
		want   []string // keys named in the error; empty: accepted
	}{
		{name: "loopback, anything goes", listen: "127.0.0.1:2525", nets: []string{"0.0.0.0/0"}},
		{name: "localhost upper case", listen: "LOCALHOST:2525", nets: []string{"0.0.0.0/0"}, setup: []func(*Relay){users}},
		{name: "ipv6 loopback", listen: "[::1]:2525", nets: []string{"::/0"}},
		{name: "the two halves of the Internet", listen: "0.0.0.0:2525", nets: []string{"0.0.0.0/1", "128.0.0.0/1"},
			want: []string{"relay.listen:", "relay.allowed_networks[0]:", "relay.allowed_networks[1]:"}},
		{name: "private network without TLS", listen: "0.0.0.0:2525", nets: []string{"10.0.0.0/8"},
			want: []string{"relay.listen:"}},
		{name: "empty host is every interface", listen: ":2525", nets: []string{"10.0.0.0/8"},
			want: []string{"relay.listen:"}},
		{name: "AUTH without TLS", listen: "0.0.0.0:2525", setup: []func(*Relay){users},
			want: []string{"relay.listen:"}},
		{name: "TLS and private networks", listen: "0.0.0.0:2525", setup: []func(*Relay){tlsOn},
			nets: []string{"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.1.0/24", "::1/128", "fd12:3456::/32"}},
		{name: "TLS and AUTH", listen: "0.0.0.0:2525", setup: []func(*Relay){tlsOn, users}},
		{name: "TLS, AUTH and a private network", listen: "[::]:2525", nets: []string{"192.168.0.0/16"}, setup: []func(*Relay){tlsOn, users}},
		{name: "public host network even with AUTH", listen: "0.0.0.0:2525", nets: []string{"10.0.0.0/8", "203.0.113.7/32"},
			setup: []func(*Relay){tlsOn, users}, want: []string{"relay.allowed_networks[1]:"}},
		{name: "a range wider than RFC 1918", listen: "0.0.0.0:2525", nets: []string{"172.0.0.0/8"},
			setup: []func(*Relay){tlsOn}, want: []string{"relay.allowed_networks[0]:"}},
		{name: "whole IPv6 Internet", listen: "[::]:2525", nets: []string{"::/0"},
			setup: []func(*Relay){tlsOn, users}, want: []string{"relay.allowed_networks[0]:"}},
		{name: "IPv4 Internet written as mapped IPv6", listen: "0.0.0.0:2525", nets: []string{"::ffff:0.0.0.0/96"},
			setup: []func(*Relay){tlsOn}, want: []string{"relay.allowed_networks[0]:"}},
		{name: "mapped private network", listen: "0.0.0.0:2525", nets: []string{"::ffff:10.0.0.0/104"}, setup: []func(*Relay){tlsOn}},
		{name: "public IPv6 network", listen: "[::]:2525", nets: []string{"2001:db8::/32"},
			setup: []func(*Relay){tlsOn}, want: []string{"relay.allowed_networks[0]:"}},
		{name: "a host name is beyond loopback", listen: "mail.example.com:2525", nets: []string{"10.0.0.0/8"},
			want: []string{"relay.listen:"}},
		{name: "implicit TLS listener exposed, public network", listen: "127.0.0.1:2525", tls: "0.0.0.0:465",
			nets: []string{"0.0.0.0/0"}, setup: []func(*Relay){tlsOn, users}, want: []string{"relay.allowed_networks[0]:"}},
		{name: "implicit TLS listener exposed, private network", listen: "127.0.0.1:2525", tls: "0.0.0.0:465",
			nets: []string{"10.0.0.0/8"}, setup: []func(*Relay){tlsOn}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			c.Relay.Listen, c.Relay.ListenTLS, c.Relay.AllowedNetworks = tt.listen, tt.tls, tt.nets
			for _, f := range tt.setup {
				f(&c.Relay)
			}
			// Validate is what `config check`, serve and a reload run.
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want a refusal naming %v", tt.want)
			}
			for _, key := range tt.want {
				if !strings.Contains(err.Error(), key) {
					t.Errorf("Validate() = %v, want it to name %s", err, key)
				}
			}
			if got := c.Relay.CheckExposure(); got == nil || got.Error() != err.Error() {
				t.Errorf("CheckExposure() = %v, want the same refusal as Validate: %v", got, err)
			}
		})
	}
}

// TestHTTPExposure: beyond loopback /status needs http.token; the refusal
// names the key and never shows the token.
func TestHTTPExposure(t *testing.T) {
	const good = "s3cret-token-0123456789"
	tests := []struct {
		name, listen, token string
		want                string // key named; "" accepted
	}{
		{name: "loopback default, no token", listen: "127.0.0.1:8025"},
		{name: "localhost, no token", listen: "localhost:8025"},
		{name: "loopback with token", listen: "[::1]:8025", token: good},
		{name: "all interfaces without token", listen: "0.0.0.0:8025", want: "http.listen:"},
		{name: "empty host without token", listen: ":8025", want: "http.listen:"},
		{name: "LAN address without token", listen: "10.1.2.3:8025", want: "http.listen:"},
		{name: "all interfaces with token", listen: "0.0.0.0:8025", token: good},
		{name: "short token", listen: "0.0.0.0:8025", token: "s3cret", want: "http.token:"},
		{name: "token with a space", listen: "0.0.0.0:8025", token: "s3cret token 0123456789", want: "http.token:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			c.HTTP.Listen, c.HTTP.Token = tt.listen, tt.token
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate() = %v, want a refusal naming %s", err, tt.want)
			case err != nil && tt.token != "" && strings.Contains(err.Error(), tt.token):
				t.Errorf("Validate() = %v: shows the token", err)
			}
		})
	}
	c := Defaults()
	c.HTTP.Token = good
	if y, _ := c.Masked().YAML(); strings.Contains(string(y), good) || !strings.Contains(string(y), "token: '********'") && !strings.Contains(string(y), `token: "********"`) {
		t.Errorf("Masked() shows http.token or drops it:\n%s", y)
	}
}
