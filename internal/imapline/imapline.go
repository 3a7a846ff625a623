// Package imapline reads IMAP protocol lines for the code that rewrites
// them on the wire (Gmail's X-GM-EXT-1, which go-imap does not speak): where
// a line announces a literal, whose bytes are data, never protocol.
package imapline

import (
	"strconv"
	"strings"
)

// LiteralLen reports whether line ends with a literal marker, {n}, {n+} or
// {n-}, and its size (RFC 3501 section 4.3, RFC 7888).
func LiteralLen(line []byte) (int64, bool) {
	s := strings.TrimRight(string(line), "\r\n")
	if !strings.HasSuffix(s, "}") {
		return 0, false
	}
	open := strings.LastIndexByte(s, '{')
	if open < 0 {
		return 0, false
	}
	num := strings.TrimRight(s[open+1:len(s)-1], "+-")
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
