package mailparse

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"runtime"
	"testing"
)

// withoutData is parts as Parts describes them: Parse's parts, undecoded.
func withoutData(parts []Part) []Part {
	var out []Part
	for _, p := range parts {
		p.Data = nil
		out = append(out, p)
	}
	return out
}

// TestPartsAgreesWithParse: over the whole golden corpus, Parts reports
// the parts Parse finds, in the same order, with the same names and the
// same inline decision, which is what the relay routes on.
func TestPartsAgreesWithParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "mail", "*.eml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test mails: %v", err)
	}
	inline, attached := 0, 0
	for _, f := range files {
		raw := readMail(t, filepath.Base(f))
		want := withoutData(Parse(raw).Parts)
		got := Parts(raw)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Parts(%s) =\n%+v\nParse gives\n%+v", filepath.Base(f), got, want)
		}
		for _, p := range got {
			if p.Inline {
				inline++
			} else {
				attached++
			}
		}
	}
	// The corpus must exercise both decisions, or agreement proves little.
	if inline < 2 || attached < 5 {
		t.Errorf("corpus has %d inline and %d attached parts, want both kinds", inline, attached)
	}
}

// TestPartsReportsBrokenBodies: a part whose body cannot be decoded is still
// a part. Parse reports the damage; Parts, which decodes nothing, reports
// the part exactly as Parse does.
func TestPartsReportsBrokenBodies(t *testing.T) {
	tests := []struct {
		name, body string // multipart/mixed with boundary "b"
		problem    string // what Parse reports
		want       []Part
	}{{
		name: "invalid base64",
		body: "--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
			"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"scan.pdf\"\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\nJVBER*i0xLj!QK~~~\r\n--b--\r\n",
		problem: "invalid base64",
		want:    []Part{{ContentType: "application/pdf", Disposition: "attachment", Filename: "scan.pdf"}},
	}, {
		name: "text attachment in an unknown charset",
		body: "--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
			"--b\r\nContent-Type: text/plain; charset=x-no-such-charset\r\nContent-Disposition: attachment; filename=notes.txt\r\n\r\nnot\xe9s\r\n--b--\r\n",
		want: []Part{{ContentType: "text/plain", Disposition: "attachment", Filename: "notes.txt"}},
	}, {
		// The image is inline only if the HTML cites it, so Parts must read
		// an HTML body that is in an unknown charset and badly encoded.
		name: "inline image cited by a broken HTML body",
		body: "--b\r\nContent-Type: multipart/related; boundary=r\r\n\r\n" +
			"--r\r\nContent-Type: text/html; charset=x-no-such-charset\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString([]byte("<p>caf\xe9</p><img src=\"cid:logo@acme.test\">")) + "*\r\n" +
			"--r\r\nContent-Type: image/png\r\nContent-ID: <logo@acme.test>\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n" +
			"--r\r\nContent-Type: image/gif\r\nContent-ID: <uncited@acme.test>\r\n\r\nGIF89a\r\n--r--\r\n--b--\r\n",
		problem: "unknown charset",
		want: []Part{
			{ContentType: "image/png", Filename: "attachment-1.png", ContentID: "logo@acme.test", Inline: true},
			{ContentType: "image/gif", Filename: "attachment-2.gif", ContentID: "uncited@acme.test"},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := []byte("From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + tt.body)
			p := Parse(raw)
			if tt.problem != "" {
				wantProblem(t, p, tt.problem)
			}
			if got := withoutData(p.Parts); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse: Parts = %+v, want %+v", got, tt.want)
			}
			if got := Parts(raw); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parts = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// bigAttachmentMail is what a helpdesk sends with a file: an HTML body
// citing an inline logo, and a PDF of size bytes, base64 in 76-column
// lines as mailers write it.
func bigAttachmentMail(size int) []byte {
	pdf := make([]byte, size)
	r := rand.NewChaCha8([32]byte{})
	r.Read(pdf)
	enc := base64.StdEncoding.EncodeToString(pdf)
	var b bytes.Buffer
	b.WriteString("From: Support <support@acme.test>\r\nTo: alice@customer.test\r\nSubject: [#42] Your contract\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mixed\"\r\n\r\n" +
		"--mixed\r\nContent-Type: multipart/related; boundary=\"rel\"\r\n\r\n" +
		"--rel\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"<p>Please find the contract attached.</p><img src=3D\"cid:logo@acme.test\">\r\n" +
		"--rel\r\nContent-Type: image/png\r\nContent-ID: <logo@acme.test>\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\r\n--rel--\r\n" +
		"--mixed\r\nContent-Type: application/pdf; name=\"contract.pdf\"\r\n" +
		"Content-Disposition: attachment; filename=\"contract.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--mixed--\r\n")
	return b.Bytes()
}

// TestPartsDoesNotHoldTheAttachment: on a mail with a 4 MB attachment,
// Parse holds the decoded file; Parts tells the inline logo from the
// attached PDF while allocating a small fraction of that.
func TestPartsDoesNotHoldTheAttachment(t *testing.T) {
	raw := bigAttachmentMail(4 << 20)
	want := []Part{
		{ContentType: "image/png", Filename: "attachment-1.png", ContentID: "logo@acme.test", Inline: true},
		{ContentType: "application/pdf", Disposition: "attachment", Filename: "contract.pdf"},
	}
	p := Parse(raw)
	wantNoProblems(t, p)
	if got := withoutData(p.Parts); !reflect.DeepEqual(got, want) || len(p.Parts[1].Data) != 4<<20 {
		t.Fatalf("Parse: Parts = %+v, want %+v with 4 MB of PDF", got, want)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	got := Parts(raw)
	runtime.ReadMemStats(&after)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Parts = %+v, want %+v", got, want)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 256<<10 {
		t.Errorf("Parts allocated %d KB for a %d KB mail, want under 256 KB", n>>10, len(raw)>>10)
	}
}

// BenchmarkPartsVsParse is what the relay saves by asking Parts whether a
// mail carries a real attachment:
//
//	go test -run '^$' -bench PartsVsParse ./mailparse
func BenchmarkPartsVsParse(b *testing.B) {
	raw := bigAttachmentMail(4 << 20)
	b.Run("Parts", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for b.Loop() {
			Parts(raw)
		}
	})
	b.Run("Parse", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for b.Loop() {
			Parse(raw)
		}
	})
}

// BenchmarkParts10KB is Parts on the everyday mail, for comparison with
// BenchmarkParse10KB.
func BenchmarkParts10KB(b *testing.B) {
	raw := benchMail(b)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if len(Parts(raw)) != 1 {
			b.Fatal("Parts lost the attachment")
		}
	}
}
