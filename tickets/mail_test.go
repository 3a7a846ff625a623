package tickets

import (
	"os"
	"path/filepath"
	"testing"
)

// The store's tests ingest the parser's test mails: real-world shapes
// whose parsing package mailparse pins with golden files.
var parserTestdata = filepath.Join("..", "mailparse", "testdata")

// readMail returns one mail of the parser's corpus (testdata/mail).
func readMail(tb testing.TB, name string) []byte {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(parserTestdata, "mail", name))
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

// benchMail is a ~10 KB mail as Gmail sends it: text and HTML
// alternatives, quoted-printable, a small attachment, French text and
// threading headers.
func benchMail(tb testing.TB) []byte {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(parserTestdata, "bench", "gmail-10kb.eml"))
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}
