package dnsname

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"example.com":                     true,
		"mx-1.mail.example.org":           true,
		"xn--bcher-kva.example":           true,
		"localhost":                       true,
		strings.Repeat("a", 63) + ".test": true,
		strings.Repeat("a", 64) + ".test": false,
		"":                                false,
		"example.com.":                    false,
		"exa mple.com":                    false,
		"-bad.example":                    false,
		"bad-.example":                    false,
		"a..b":                            false,
		"[192.0.2.1]":                     false,
		"bücher.example":                  false,
		"under_score.example":             false,
		strings.Repeat("a.", 127) + "aa":  false, // 256 octets
	} {
		if got := Valid(s); got != want {
			t.Errorf("Valid(%q) = %v, want %v", s, got, want)
		}
	}
}
