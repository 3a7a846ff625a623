package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/tickets"
)

// TestConsumerReadsWhatMailgateWrote runs the README's example consumer on
// the events of two real mails: a new ticket and its threaded reply.
func TestConsumerReadsWhatMailgateWrote(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	st := tickets.NewStore(rdb, tickets.Options{})
	ctx := context.Background()
	for _, name := range []string{"plain-ascii.eml", "reply-in-reply-to.eml"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "mailparse", "testdata", "mail", name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Ingest(ctx, raw, tickets.Source{}); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := consume(ctx, rdb, st.Key("events"), "helpdesk", "c1", "0", true, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "new ticket #1") || !strings.Contains(lines[1], "comment 2 on #1") {
		t.Fatalf("consumer printed:\n%s\nwant a new ticket #1 then comment 2 on #1", out.String())
	}
	if p := rdb.XPending(ctx, st.Key("events"), "helpdesk").Val(); p.Count != 0 {
		t.Errorf("%d events left unacknowledged", p.Count)
	}
	// A second run of the same group has nothing left to read.
	out.Reset()
	consume(ctx, rdb, st.Key("events"), "helpdesk", "c1", "0", true, &out)
	if out.Len() != 0 {
		t.Errorf("second run re-read events: %s", out.String())
	}
}
