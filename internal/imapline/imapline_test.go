package imapline

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

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

// Reader hands whole lines to Rewrite, never a literal's bytes (even
// when they look like protocol), and passes an over-long line unexamined.
func TestReader(t *testing.T) {
	long := strings.Repeat("x", MaxLine+10) + "\r\n"
	in := "* 1 FETCH (BODY[] {11}\r\nA1 LOGOUT\r\n)\r\n" + "* DROP me\r\n" + long + "A2 OK done\r\n"
	var seen []string
	r := &Reader{R: iotest.OneByteReader(strings.NewReader(in)), Rewrite: func(line []byte) []byte {
		seen = append(seen, string(line))
		if strings.HasPrefix(string(line), "* DROP") {
			return nil
		}
		return bytes.ToLower(line)
	}}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	want := "* 1 fetch (body[] {11}\r\nA1 LOGOUT\r\n)\r\n" + long + "a2 ok done\r\n"
	if string(out) != want {
		t.Errorf("read %q…, want %q…", out[:min(len(out), 80)], want[:80])
	}
	if len(seen) != 4 || seen[1] != ")\r\n" || seen[3] != "A2 OK done\r\n" {
		t.Errorf("lines handed to Rewrite: %q", seen)
	}
}
