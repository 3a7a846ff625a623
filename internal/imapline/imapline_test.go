package imapline

import "testing"

func TestLiteralLen(t *testing.T) {
	for _, tc := range []struct {
		line string
		n    int64
		ok   bool
	}{
		{"* 1 FETCH (UID 5 BODY[] {42}\r\n", 42, true},
		{"a1 APPEND INBOX {7+}\r\n", 7, true},
		{"a1 APPEND INBOX {0-}\r\n", 0, true},
		{"* 1 FETCH (UID 5)\r\n", 0, false},
		{"* OK {oops}\r\n", 0, false},
		{"* OK no brace}\r\n", 0, false},
	} {
		n, ok := LiteralLen([]byte(tc.line))
		if n != tc.n || ok != tc.ok {
			t.Errorf("LiteralLen(%q) = %d %v, want %d %v", tc.line, n, ok, tc.n, tc.ok)
		}
	}
}
