package tickets

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/mailgate/mailgate/mailparse"
)

// TestJSONTailMatchesEncodingJSON pins jsonTail to what encoding/json
// writes without HTML escaping: helpdesks decode the stored JSON with any
// JSON library, so the faster encoder must not change a byte.
func TestJSONTailMatchesEncodingJSON(t *testing.T) {
	c := newComment(mailparse.Parse(benchMail(t)), []byte("raw"), sha256Hex([]byte("raw")), false, time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC))
	c.HTML += `<a href="x?a=1&b=2">ünïcödé</a> \u2028` + "\u2028"
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		t.Fatal(err)
	}
	got, err := jsonTail(c)
	if err != nil {
		t.Fatal(err)
	}
	if w := bytes.TrimSuffix(want.Bytes(), []byte("\n"))[1:]; !bytes.Equal(got, w) {
		t.Fatalf("jsonTail(comment) =\n%s\nwant encoding/json's\n%s", got, w)
	}
	if _, err := jsonTail(struct{}{}); err == nil {
		t.Error("jsonTail(empty object) succeeded, want an error")
	}
}
