package imapfetch

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/internal/fakegmail"
	"github.com/mailgate/mailgate/tickets"
)

// deliverN puts test mails 1..n in alice's INBOX, tracked by fs (if not
// nil) for its \Seen check, and returns their UIDs.
func deliverN(e *env, fs *flakyStore, n int) []imap.UID {
	e.t.Helper()
	uids := make([]imap.UID, 0, n)
	for i := 1; i <= n; i++ {
		uid := e.deliver(alice, i, false)
		if fs != nil {
			fs.track(alice, i, uid)
		}
		uids = append(uids, uid)
	}
	return uids
}

// One store call per FETCH batch; a mail the store fails in the middle of
// a batch is the only one left unseen, holds the cursor just below it,
// and is the only one retried.
func TestBatchOneFailingMailRetried(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	fs := &flakyStore{Store: e.st, gm: e.gm, email: alice, failTimes: map[string]int{"m3." + alice: 1}}
	o := e.options()
	o.BatchSize = 4
	f := New(e.acc, fs, o)
	pollOnce(t, f, alice)
	uids := deliverN(e, fs, 10)

	rep := pollOnce(t, f, alice)
	if want := (Report{Fetched: 10, Created: 9, Errors: 1}); rep != want {
		t.Fatalf("PollOnce = %+v, want %+v", rep, want)
	}
	if got := len(fs.batches); got != 3 {
		t.Errorf("%d store calls for 10 mails in batches of 4, want 3: %v", got, fs.batches)
	}
	for i, uid := range uids {
		if seen := e.gm.IsSeen(alice, uid); seen != (i != 2) {
			t.Errorf("mail %d: \\Seen %v, want %v", i+1, seen, i != 2)
		}
	}
	if c := e.cursor(alice); c.LastUID != uint32(uids[1]) {
		t.Errorf("cursor %d, want %d (just below the failed mail)", c.LastUID, uids[1])
	}

	rep = pollOnce(t, f, alice)
	if want := (Report{Fetched: 1, Created: 1}); rep != want {
		t.Fatalf("next PollOnce = %+v, want %+v (only the failed mail again)", rep, want)
	}
	if last := fs.batches[len(fs.batches)-1]; len(last) != 1 || last[0] != "m3."+alice {
		t.Errorf("retry batch %v, want only mail 3", last)
	}
	if !e.gm.IsSeen(alice, uids[2]) {
		t.Error("mail 3 unseen after its retry was stored")
	}
	if c := e.cursor(alice); c.LastUID != uint32(uids[9]) {
		t.Errorf("cursor %d, want %d", c.LastUID, uids[9])
	}
	if n := e.ticketCount(); n != 10 {
		t.Errorf("%d tickets, want 10", n)
	}
	e.wantOneCommentEach()
	if len(fs.seenAtIngest) > 0 {
		t.Errorf("mails %v were \\Seen when their batch reached the store", fs.seenAtIngest)
	}
}

// Shutdown while a batch is being stored: that batch is finished and
// marked \Seen, the cursor covers it, nothing after it is stored; the next
// poll ingests the rest, each mail once.
func TestShutdownMidBatchLosesNothing(t *testing.T) {
	e := newEnv(t, fakegmail.Options{})
	e.connect(alice, 0)
	fs := &flakyStore{Store: e.st, gm: e.gm, email: alice, block: make(chan struct{}), entered: make(chan struct{}, 1)}
	o := e.options()
	o.BatchSize = 4
	o.IDLE = false
	o.PollInterval = time.Hour
	f := New(e.acc, fs, o)
	blocked := fs.block
	fs.block = nil
	pollOnce(t, f, alice)
	uids := deliverN(e, fs, 10)
	fs.mu.Lock()
	fs.block = blocked
	fs.mu.Unlock()

	stop := e.start(f)
	select {
	case <-fs.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no batch reached the store")
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Run returned while a batch was being stored")
	case <-time.After(300 * time.Millisecond):
	}
	close(blocked)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the batch was stored")
	}
	if n := e.ticketCount(); n != 4 {
		t.Errorf("%d tickets after shutdown, want 4 (the batch in flight, not the next)", n)
	}
	for i, uid := range uids {
		if seen := e.gm.IsSeen(alice, uid); seen != (i < 4) {
			t.Errorf("mail %d: \\Seen %v after shutdown, want %v", i+1, seen, i < 4)
		}
	}
	if c := e.cursor(alice); c.LastUID != uint32(uids[3]) {
		t.Errorf("cursor %d after shutdown, want %d", c.LastUID, uids[3])
	}

	fs.mu.Lock()
	fs.block = nil
	fs.mu.Unlock()
	if rep := pollOnce(t, f, alice); rep != (Report{Fetched: 6, Created: 6}) {
		t.Errorf("PollOnce after the restart = %+v, want the 6 other mails", rep)
	}
	if n := e.ticketCount(); n != 10 {
		t.Errorf("%d tickets, want 10", n)
	}
	e.wantOneCommentEach()
	if len(fs.seenAtIngest) > 0 {
		t.Errorf("mails %v were \\Seen when their batch reached the store", fs.seenAtIngest)
	}
}

// killingStore kills Redis in the middle of the first batch handed to it,
// after the first `after` mails are stored.
type killingStore struct {
	*tickets.Store
	e      *env
	after  int
	killed bool
}

func (s *killingStore) IngestBatch(ctx context.Context, mails []tickets.BatchMail) []tickets.BatchResult {
	if s.killed || len(mails) <= s.after {
		return s.Store.IngestBatch(ctx, mails)
	}
	out := s.Store.IngestBatch(ctx, mails[:s.after])
	s.killed = true
	s.e.redis.Kill()
	return append(out, s.Store.IngestBatch(ctx, mails[s.after:])...)
}

// Redis killed while a batch is stored: the session ends with a store
// error, the mails stored before it are \Seen, no attempt is
// counted against the others, and once Redis is back a poll ingests every
// mail exactly once.
func TestRedisKilledDuringBatch(t *testing.T) {
	e := newEnvRedis(t, fakegmail.Options{}, "appendonly yes", "appendfsync always")
	e.connect(alice, 0)
	ks := &killingStore{Store: e.st, e: e, after: 2}
	o := e.options()
	o.BatchSize = 5
	o.MaxAttempts = 1 // a counted failure would quarantine at once
	o.CommandTimeout = 3 * time.Second
	f := New(e.acc, ks, o)
	pollOnce(t, f, alice)
	uids := deliverN(e, nil, 12)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := f.PollOnce(ctx, alice, nil)
	var se *storeError
	if !errors.As(err, &se) {
		t.Fatalf("PollOnce with Redis killed mid-batch = %v, want a store error", err)
	}
	for i, uid := range uids {
		if seen := e.gm.IsSeen(alice, uid); seen != (i < 2) {
			t.Errorf("mail %d: \\Seen %v after Redis died, want %v (only the mails stored before)", i+1, seen, i < 2)
		}
	}
	if err := e.redis.Restart(); err != nil {
		t.Fatal(err)
	}
	rep := pollOnce(t, f, alice)
	// The cursor write after the first two mails may have failed with
	// Redis down: they are then searched again, and found \Seen.
	if want := (Report{Fetched: 10, Created: 10}); rep != want {
		t.Errorf("PollOnce after Redis came back = %+v, want %+v", rep, want)
	}
	if n := e.ticketCount(); n != 12 {
		t.Errorf("%d tickets, want 12", n)
	}
	e.wantOneCommentEach()
	for i, uid := range uids {
		if !e.gm.IsSeen(alice, uid) {
			t.Errorf("mail %d unseen at the end", i+1)
		}
	}
	if keys, _ := e.rdb.Keys(context.Background(), "*attempts*").Result(); len(keys) > 0 {
		t.Errorf("attempts counted for a Redis outage: %v", keys)
	}
	if q, err := e.st.QuarantineList(context.Background()); err != nil || len(q) > 0 {
		t.Errorf("QuarantineList = %v, %v; want none", q, err)
	}
	if c := e.cursor(alice); c.LastUID != uint32(uids[11]) {
		t.Errorf("cursor %d, want %d", c.LastUID, uids[11])
	}
}

// A batch holds at most batchBytes of mail, by the sizes the server
// reports, whatever BatchSize says: small mails fill a batch, larger ones
// share it with fewer, and a mail too large for a share is alone.
func TestBatchBytesBound(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bytes int64
		mails int
		mail  func(to string, n int) []byte
		want  []int // mails per store call
	}{
		{"small mails fill a batch", 100 << 10, 10, testMail, []int{10}},
		{"10 KB mails eight to 100 KB", 100 << 10, 10, benchMail, []int{8, 2}},
		{"mails over an eighth alone", 5 << 10, 10, benchMail, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		// The sizes after the first planWindow UIDs are asked for while
		// the first batches are fetched.
		{"planned beyond the first window", 100 << 10, planWindow + 50, testMail,
			append(slices.Repeat([]int{20}, planWindow/20), 20, 20, 10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, fakegmail.Options{})
			e.connect(alice, 0)
			fs := &flakyStore{Store: e.st}
			o := e.options()
			o.BatchSize = 20
			f := New(e.acc, fs, o)
			f.batchBytes = tc.bytes
			pollOnce(t, f, alice)
			var uids []imap.UID
			for n := 1; n <= tc.mails; n++ {
				uid, err := e.gm.Deliver(alice, tc.mail(alice, n), false)
				if err != nil {
					t.Fatal(err)
				}
				uids = append(uids, uid)
			}
			if rep := pollOnce(t, f, alice); rep != (Report{Fetched: tc.mails, Created: tc.mails}) {
				t.Fatalf("PollOnce = %+v, want %d tickets", rep, tc.mails)
			}
			var got []int
			for _, b := range fs.batches {
				got = append(got, len(b))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("mails per store call %v, want %v", got, tc.want)
			}
			for i, uid := range uids {
				if !e.gm.IsSeen(alice, uid) {
					t.Errorf("mail %d unseen after its ticket was stored", i+1)
				}
			}
			if c := e.cursor(alice); c.LastUID != uint32(uids[len(uids)-1]) {
				t.Errorf("cursor %d, want %d", c.LastUID, uids[len(uids)-1])
			}
		})
	}
}
