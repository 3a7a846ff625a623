package oneline

import "testing"

func TestOf(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "",
		"Your order  #42":    "Your order  #42",
		"Your order\r\n #42": "Your order #42",
		"550-5.4.5 Daily user sending limit\n550 5.4.5 exceeded": "550-5.4.5 Daily user sending limit 550 5.4.5 exceeded",
		"\tinvoice\t.pdf ": "invoice .pdf",
		"a\r\n\r\n":        "a",
	} {
		if got := Of(in); got != want {
			t.Errorf("Of(%q) = %q, want %q", in, got, want)
		}
	}
}
