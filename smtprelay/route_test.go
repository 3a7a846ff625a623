package smtprelay

import (
	"testing"

	"github.com/mailgate/mailgate/mailparse"
)

// TestRealAttachmentShortcut: the header shortcut of realAttachment agrees
// with mailparse.Parse, which it spares.
func TestRealAttachmentShortcut(t *testing.T) {
	for _, c := range []struct {
		name, ct, disp string
		want           bool
	}{
		{"no content type", "", "", false},
		{"text/plain", "text/plain; charset=utf-8", "", false},
		{"text/html", "TEXT/HTML", "", false},
		{"text attachment", "text/plain", "attachment; filename=a.txt", true},
		{"pdf", "application/pdf", "", true},
		{"inline pdf", "application/pdf", "inline", false},
	} {
		raw := "From: a@acme.test\r\nSubject: x\r\n"
		if c.ct != "" {
			raw += "Content-Type: " + c.ct + "\r\n"
		}
		if c.disp != "" {
			raw += "Content-Disposition: " + c.disp + "\r\n"
		}
		raw += "\r\nJVBERi0xLjQK\r\n"
		data := []byte(raw)
		got := realAttachment(readHeader(data), data)
		parsed := false
		for _, p := range mailparse.Parse(data).Parts {
			parsed = parsed || !p.Inline
		}
		if got != c.want || parsed != c.want {
			t.Errorf("%s: realAttachment = %v, mailparse.Parse says %v; want %v", c.name, got, parsed, c.want)
		}
	}
}
