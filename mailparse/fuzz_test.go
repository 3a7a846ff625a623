package mailparse

import (
	"bytes"
	"io"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse checks Parse's promises on any input: no panic (Parse recovers
// its own, so a recovered one shows up as a Problem), valid UTF-8 text,
// safe file names, and Parts describing the same parts as Parse. Seeds:
// the test mails plus testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "mail", "*.eml"))
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p := Parse(raw)
		for _, pr := range p.Problems {
			if strings.HasPrefix(pr, "parser panic") {
				t.Fatalf("Parse(%q): %s", raw, pr)
			}
		}
		for what, s := range map[string]string{"Text": p.Text, "HTML": p.HTML, "Subject": p.Subject, "From.Name": p.From.Name} {
			if !utf8.ValidString(s) {
				t.Fatalf("Parse(%q).%s = %q, not valid UTF-8", raw, what, s)
			}
		}
		for i, part := range p.Parts {
			if part.Filename == "" || !utf8.ValidString(part.Filename) || strings.ContainsAny(part.Filename, "/\\") {
				t.Fatalf("Parse(%q).Parts[%d].Filename = %q", raw, i, part.Filename)
			}
		}
		if got, want := Parts(raw), withoutData(p.Parts); !reflect.DeepEqual(got, want) {
			t.Fatalf("Parts(%q) =\n%+v\nParse gives\n%+v", raw, got, want)
		}
	})
}

// FuzzDecodeQP checks the hand-written quoted-printable decoder against
// mime/quotedprintable: wherever the standard decoder succeeds, both give
// the same bytes, and the output never outgrows the input (decodeQP works
// in place). With lf, the text is the same once line breaks are LF.
func FuzzDecodeQP(f *testing.F) {
	for _, s := range []string{"caf=C3=A9", "soft=\r\nbreak", "trailing   \r\nspace", "a=3d=3D", "not=an escape=",
		"=ZZ", "line\r\r\n", "x = \r\ny", "=\n", "a\rb\r\n", "=E2=80=99=\n=C3=A9\t \n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got := decodeQP(nil, in, false)
		if len(got) > len(in) {
			t.Fatalf("decodeQP(%q) = %q, longer than its input", in, got)
		}
		if want, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(in))); err == nil && !bytes.Equal(got, want) {
			t.Fatalf("decodeQP(%q) = %q, mime/quotedprintable gives %q", in, got, want)
		}
		if c := bytes.Clone(in); !bytes.Equal(decodeQP(c, c, false), got) {
			t.Fatalf("decodeQP(%q) in place differs from %q", in, got)
		}
		if lf := decodeQP(nil, in, true); lfString(lf) != lfString(got) {
			t.Fatalf("decodeQP(%q, lf) = %q, not %q with LF line breaks", in, lf, got)
		}
	})
}
