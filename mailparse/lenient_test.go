package mailparse

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
	"golang.org/x/net/html"
)

// Each test here first shows the maintained library failing on a case that
// real mail has, then Parse handling it through the hand-written code in
// lenient.go (or the error handling around the library). When a
// library starts to handle its case, the test says so: the fallback can
// then go.

func TestLibraryFailsMalformedHeader(t *testing.T) {
	raw := readMail(t, "malformed-headers.eml")
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err == nil {
		t.Fatal("textproto.ReadHeader accepts malformed-headers.eml: lenientHeader may be unneeded")
	}
	if h.Get("Subject") != "" {
		t.Errorf("textproto.ReadHeader kept Subject %q after the bad line", h.Get("Subject"))
	}
	p := Parse(raw)
	if p.Subject != "Urgent: order not delivered" || p.MessageID != "malformed-0001@example.com" {
		t.Errorf("Parse: Subject, MessageID = %q, %q, want the fields after the bad lines", p.Subject, p.MessageID)
	}
	wantProblem(t, p, `dropped malformed line "this line is not a header at all"`)
}

// libraryParts reads a multipart body with go-message alone, as
// message.Entity.MultipartReader would: the part bodies, and the error
// that ended the reading (nil after the close delimiter).
func libraryParts(body, boundary string) (parts []string, err error) {
	mr := textproto.NewMultipartReader(strings.NewReader(body), boundary)
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return parts, nil
		}
		if err != nil {
			return parts, err
		}
		b, err := io.ReadAll(part)
		parts = append(parts, string(b))
		if err != nil {
			return parts, err
		}
	}
}

func TestLibraryFailsMultipart(t *testing.T) {
	const gif = "R0lGODlhAQABAAAAACw="
	tests := []struct {
		name, body string // multipart/mixed with boundary "b"
		wantText   string
		wantHTML   string
		wantParts  int
	}{{
		// A long Content-Type folded without the leading white space.
		name: "malformed part header",
		body: "--b\r\nContent-Type: text/plain;\r\ncharset=utf-8\r\n\r\nhello\r\n" +
			"--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--b--\r\n",
		wantText: "hello", wantHTML: "<p>hi</p>",
	}, {
		// golang.org/issue/46042, fixed in mime/multipart but not in
		// go-message's copy of it.
		name: "nested boundary extends the outer one with -",
		body: "--b\r\nContent-Type: multipart/alternative; boundary=\"b-2\"\r\n\r\n" +
			"--b-2\r\n\r\nplain\r\n--b-2\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b-2--\r\n" +
			"--b\r\nContent-Type: image/gif\r\nContent-Transfer-Encoding: base64\r\n\r\n" + gif + "\r\n--b--\r\n",
		wantText: "plain", wantHTML: "<p>x</p>", wantParts: 1,
	}, {
		// The reader takes CRLF from the first delimiter and then reads
		// the rest, headers and all, as the first part, "truncated".
		name:     "CRLF first delimiter, LF after",
		body:     "--b\r\nContent-Type: text/plain\r\n\r\nhello\n--b\nContent-Type: text/html\n\n<p>hi</p>\n--b--\n",
		wantText: "hello", wantHTML: "<p>hi</p>",
	}, {
		name:     "LF first delimiter, CRLF after",
		body:     "--b\nContent-Type: text/plain\n\nhello\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--b--\r\n",
		wantText: "hello", wantHTML: "<p>hi</p>",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parts, err := libraryParts(tt.body, "b")
			if err == nil && len(parts) == 2 && !strings.Contains(parts[0], "--b") {
				t.Errorf("go-message reads %q: lenientMultipart may be unneeded", parts)
			}
			p := Parse([]byte("From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + tt.body))
			if p.Text != tt.wantText || p.HTML != tt.wantHTML || len(p.Parts) != tt.wantParts {
				t.Errorf("Parse: Text %q, HTML %q, %d parts; want %q, %q, %d", p.Text, p.HTML, len(p.Parts), tt.wantText, tt.wantHTML, tt.wantParts)
			}
		})
	}
}

// A truncated multipart needs no fallback, only the right handling of the
// library's error: the parts read so far and the bytes of the cut one.
func TestLibraryTruncatedMultipart(t *testing.T) {
	parts, err := libraryParts("--b\r\n\r\nfirst\r\n--b\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4 cut", "b")
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(parts) != 2 || parts[1] != "%PDF-1.4 cut" {
		t.Errorf("go-message: parts %q, err %v; want the bytes before the cut and io.ErrUnexpectedEOF", parts, err)
	}
	p := Parse(readMail(t, "truncated.eml"))
	wantProblem(t, p, "closing boundary")
	if len(p.Parts) != 1 || !bytes.HasPrefix(p.Parts[0].Data, []byte("%PDF-1.4")) {
		t.Errorf("Parse: Parts = %+v, want the readable start of contract.pdf", p.Parts)
	}
}

func TestLibraryFailsParams(t *testing.T) {
	tests := []struct {
		field, name, want string
	}{
		// RFC 2231 in ISO-8859-1, as Outlook and Apple Mail send it: the
		// standard library drops the value, or keeps only the sections
		// after the first.
		{"attachment; filename*=iso-8859-1''Re%E7u.txt", "filename", "Reçu.txt"},
		{"attachment; filename*0*=iso-8859-1''Re%E7u%20de; filename*1*=%20paiement.txt", "filename", "Reçu de paiement.txt"},
		{`attachment; filename="fallback.txt"; filename*=iso-8859-1''Re%E7u.txt`, "filename", "Reçu.txt"},
		{"application/octet-stream; name=my file.pdf", "name", "my file.pdf"},
		{"multipart/mixed; boundary=----=_Part_1", "boundary", "----=_Part_1"},
		{`text/plain; charset="utf-8`, "charset", "utf-8"},
		{"text/plain; charset=utf-8; charset=latin1", "charset", "utf-8"},
		{"text/plain (Outlook); charset=utf-8", "charset", "utf-8"},
		{"attachment; filename=\"Re\xe7u.pdf\"", "filename", "Reçu.pdf"},
	}
	for _, tt := range tests {
		if _, params, err := mime.ParseMediaType(tt.field); err == nil && params[tt.name] == tt.want {
			t.Errorf("mime.ParseMediaType(%q) gets %s right: lenientParams may be unneeded for it", tt.field, tt.name)
		}
		w := &walker{p: &Parsed{}}
		if _, params := w.params(tt.field, "Content-Type"); params[tt.name] != tt.want {
			t.Errorf("params(%q)[%s] = %q, want %q", tt.field, tt.name, params[tt.name], tt.want)
		}
	}
}

func TestLibraryFailsBase64(t *testing.T) {
	tests := []struct{ in, want string }{
		{"aGVsbG8", "hello"},     // cut by a truncation
		{"aGk=aGk=", "hihi"},     // encoded chunk by chunk
		{"aGVs*bG8=", "hello"},   // stray character
		{"aGVs bG8=\t", "hello"}, // white space other than line breaks
	}
	for _, tt := range tests {
		b := make([]byte, len(tt.in))
		if n, err := base64.StdEncoding.Decode(b, []byte(tt.in)); err == nil && string(b[:n]) == tt.want {
			t.Errorf("encoding/base64 decodes %q: the lenient path may be unneeded for it", tt.in)
		}
		if got, _, _ := decodeBase64(nil, []byte(tt.in)); string(got) != tt.want {
			t.Errorf("decodeBase64(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLibraryFailsQPControlBytes(t *testing.T) {
	// ISO-2022-JP sent raw under a quoted-printable label, and a form feed.
	for _, in := range []string{"\x1b$B$3$s$K$A$O\x1b(B=\r\nworld", "page one\fpage two"} {
		got, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(in)))
		if err == nil {
			t.Errorf("mime/quotedprintable decodes %q", in)
		}
		want := strings.Replace(in, "=\r\n", "", 1)
		if dec := string(decodeQP(nil, []byte(in), false)); dec != want || len(got) >= len(want) {
			t.Errorf("decodeQP(%q) = %q (mime/quotedprintable: %q), want %q", in, dec, got, want)
		}
	}
}

// BenchmarkDecodeQP is why decodeQP is hand-written: compare
//
//	go test -run '^$' -bench DecodeQP ./mailparse
func BenchmarkDecodeQP(b *testing.B) {
	para := "Bonjour, depuis la mise à jour de mardi la synchronisation du calendrier s’arrête après quelques minutes. "
	var enc bytes.Buffer
	qw := quotedprintable.NewWriter(&enc)
	qw.Write([]byte(strings.Repeat(para+"\r\n\r\n", 24)))
	qw.Close()
	in := enc.Bytes()
	out := make([]byte, 0, len(in))
	b.Run("mime/quotedprintable", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		var rd bytes.Reader
		br := bufio.NewReader(&rd)
		for b.Loop() {
			rd.Reset(in)
			br.Reset(&rd)
			n, _ := io.ReadFull(quotedprintable.NewReader(br), out[:cap(out)])
			out = out[:n]
		}
	})
	b.Run("decodeQP", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			out = decodeQP(out, in, false)
		}
	})
}

func TestLibraryHidesUnterminatedComment(t *testing.T) {
	const body = "<p>Hello</p><!-- [if mso]><p>Please call me back.</p>"
	z := html.NewTokenizer(strings.NewReader(body))
	var text strings.Builder
	for tt := z.Next(); tt != html.ErrorToken; tt = z.Next() {
		if tt == html.TextToken {
			text.Write(z.Text())
		}
	}
	if strings.Contains(text.String(), "call me") {
		t.Errorf("x/net/html shows the text after an unterminated comment: render's reopen may be unneeded")
	}
	if got := htmlToText(body); got != "Hello\n\n[if mso]>\n\nPlease call me back." {
		t.Errorf("htmlToText(%q) = %q", body, got)
	}
}
