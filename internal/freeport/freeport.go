// Package freeport picks loopback TCP ports for servers that a test starts
// as separate processes (redis-server, Dovecot, mailgate itself), which
// cannot be handed a listener bound to 127.0.0.1:0.
//
// The port is found by binding :0 and releasing it, so another process can
// take it before the server binds it: callers that can tell "address in
// use" apart retry with a new port.
package freeport

import (
	"net"
	"strconv"
)

// Port returns a loopback port free at the time of the call.
func Port() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr returns "127.0.0.1:PORT" with a port free at the time of the call.
func Addr() (string, error) {
	port, err := Port()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}
