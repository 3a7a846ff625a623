package smtprelay

import (
	"fmt"
	"testing"

	"github.com/mailgate/mailgate/mailparse"
)

// TestRealAttachment: realAttachment, which reads the parts without
// decoding them, decides as mailparse.Parse does, whose parts the ticket
// store keeps: a file is a real attachment, an image the HTML shows in
// place is not.
func TestRealAttachment(t *testing.T) {
	const related = "Content-Type: multipart/related; boundary=r\r\n\r\n" +
		"--r\r\nContent-Type: text/html\r\n\r\n<p>Hi</p><img src=\"cid:logo@acme.test\">\r\n" +
		"--r\r\nContent-Type: image/png\r\nContent-ID: <%s>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n--r--\r\n"
	for _, c := range []struct {
		name, ct, disp string
		body           string // replaces the one-line body when set
		want           bool
	}{
		{"no content type", "", "", "", false},
		{"text/plain", "text/plain; charset=utf-8", "", "", false},
		{"text/html", "TEXT/HTML", "", "", false},
		{"text attachment", "text/plain", "attachment; filename=a.txt", "", true},
		{"pdf", "application/pdf", "", "", true},
		{"inline pdf", "application/pdf", "inline", "", false},
		{"image the HTML shows", "", "", fmt.Sprintf(related, "logo@acme.test"), false},
		{"image the HTML does not show", "", "", fmt.Sprintf(related, "other@acme.test"), true},
		{"pdf with broken base64", "", "", "Content-Type: multipart/mixed; boundary=m\r\n\r\n" +
			"--m\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" +
			"--m\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=x.pdf\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n%PDF!!\r\n--m--\r\n", true},
	} {
		raw := "From: a@acme.test\r\nSubject: x\r\n"
		if c.ct != "" {
			raw += "Content-Type: " + c.ct + "\r\n"
		}
		if c.disp != "" {
			raw += "Content-Disposition: " + c.disp + "\r\n"
		}
		if c.body != "" {
			raw += c.body
		} else {
			raw += "\r\nJVBERi0xLjQK\r\n"
		}
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
