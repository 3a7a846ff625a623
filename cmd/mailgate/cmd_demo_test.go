//go:build demo

package main

import (
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/redistest"
)

// TestDemo plays the README's first command, on the embedded Redis (no
// Redis answers at the URL) and on a real one, and checks the story a
// newcomer reads: every step happened, and it ends well.
func TestDemo(t *testing.T) {
	srv := redistest.Start(t)
	for name, url := range map[string]string{"embedded": "redis://127.0.0.1:1/0", "real": srv.URL} {
		t.Run(name, func(t *testing.T) {
			code, out, stderr := mailgate(t, "--redis-url", url, "demo")
			if code != 0 {
				t.Fatalf("demo exit %d\n%s\n%s", code, out, stderr)
			}
			wantOutput(t, "demo output", out,
				"imported 5 recent mails",
				"ticket #6 \"Problème de facturation\"",
				"→ gmail: sent as acme.helpdesk@gmail.com",
				"comment 2 on ticket #7 (threaded by in-reply-to)",
				"DKIM-signed for acme.example: the signature verifies",
				"quota.warning event",
				"notification 4: quota exhausted → direct",
				"suppressed as auto-reply",
				"[##########] 3/3",
				"done in",
			)
			if name == "embedded" && !strings.Contains(out, "embedded in-memory Redis") {
				t.Error("demo does not say it uses the embedded Redis")
			}
		})
	}
}
