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

// TestCommentMembersJoinToTheComment: the head (what an event carries)
// holds every field but the body, and head and body joined, as the ingest
// script stores them, decode to the whole comment.
func TestCommentMembersJoinToTheComment(t *testing.T) {
	c := newComment(mailparse.Parse(benchMail(t)), []byte("raw"), sha256Hex([]byte("raw")), false, time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC))
	head, body, err := commentMembers(c)
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal([]byte("{"+string(head)+"}"), &h); err != nil {
		t.Fatalf("head is not JSON members: %v: %s", err, head)
	}
	if _, ok := h["text"]; ok {
		t.Errorf("head holds the text: %s", head)
	}
	if _, ok := h["html"]; ok {
		t.Errorf("head holds the HTML: %s", head)
	}
	if h["subject"] != c.Subject || h["raw"] != c.Raw || h["message_id"] != c.MessageID {
		t.Errorf("head = %s, want the comment's other fields", head)
	}
	var got Comment
	if err := json.Unmarshal([]byte("{"+string(head)+","+string(body)+"}"), &got); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(c)
	if g, _ := json.Marshal(&got); !bytes.Equal(g, want) {
		t.Errorf("head and body joined =\n%s\nwant\n%s", g, want)
	}
}
