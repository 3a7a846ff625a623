// Package dnsname says whether a string is a host name mail can be routed
// to: the one check shared by the configuration (relay.hostname, DKIM
// domains) and the relay's envelope (the domain of MAIL FROM and RCPT TO).
package dnsname

import "strings"

// Valid reports whether s is a syntactically valid ASCII host name: dot
// separated labels of letters, digits and hyphens, no label empty, longer
// than 63 octets or starting or ending with a hyphen, 253 octets at most
// (RFC 1123 section 2.1, RFC 5321 section 4.1.2 "Domain"). IDNs must be
// written in their A-label form (xn--...); a trailing dot is not allowed.
func Valid(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, ch := range label {
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-') {
				return false
			}
		}
	}
	return true
}
