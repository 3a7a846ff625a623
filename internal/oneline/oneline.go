// Package oneline puts text from mail on one line, for a header field, a
// table cell, a log line or a DSN: folded Subjects (RFC 5322 section
// 2.2.3), multi-line SMTP replies (RFC 5321 section 4.2.1), file names
// with control characters.
package oneline

import "strings"

// Of returns s on one line. When s holds a line break or a tab, every run
// of white space becomes one space and the ends are trimmed; otherwise s
// is returned as it is, so a Subject keeps its own spacing.
func Of(s string) string {
	if strings.ContainsAny(s, "\r\n\t") {
		s = strings.Join(strings.Fields(s), " ")
	}
	return s
}
