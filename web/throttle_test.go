package web

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/redistest"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
)

// TestConsoleShowsThrottle: an account Gmail throttles is shown as
// "throttled by Google until HH:MM (reason)", its row marked.
func TestConsoleShowsThrottle(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	box, err := oauth.LoadOrCreateKey(filepath.Join(t.TempDir(), "key"))
	if err != nil {
		t.Fatal(err)
	}
	acc := accounts.New(rdb, accounts.Options{Box: box})
	if _, err := acc.Connect(ctx, accounts.Account{Email: quiet}, "refresh-token"); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour)
	if err := acc.SetThrottled(ctx, quiet, until, "command or bandwidth limit exceeded"); err != nil {
		t.Fatal(err)
	}
	q := smtprelay.NewQueue(rdb, smtprelay.QueueOptions{})
	src := status.Sources{Accounts: acc, Queue: q, Quota: smtprelay.NewQuota(q)}
	base := serve(t, New(Options{
		Status:  func(ctx context.Context) (any, error) { return src.Gather(ctx) },
		Timeout: 2 * time.Second,
	}))
	code, body, _ := get(t, base+"/")
	want := "throttled by Google until " + until.Local().Format("15:04") + " (command or bandwidth limit exceeded)"
	if code != 200 || !strings.Contains(body, want) {
		t.Fatalf("GET / = %d, want the page to say %q:\n%s", code, want, body)
	}
	if n := strings.Count(body, `<tr class="warn">`); n != 1 {
		t.Errorf("%d rows marked as warnings, want the throttled account's", n)
	}
}
