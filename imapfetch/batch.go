// This file fetches one batch of mail while the previous one is being
// stored: it streams the UID FETCH answer, reads each body into a buffer of
// the size the server announced, and parses the mails on all cores as they
// arrive, so that FETCH, parsing and the store's round trip overlap.

package imapfetch

import (
	"cmp"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailgate/mailgate/mailparse"
)

// bodyPeek is BODY.PEEK[]: the whole message, without setting \Seen
// (RFC 3501 section 6.4.5), so that only a stored ticket marks it read.
var bodyPeek = &imap.FetchItemBodySection{Peek: true}

// fetchOptions is what a batch asks for: the UID (before the literal, so
// that the answer can be matched to the command), INTERNALDATE and the
// whole message.
var fetchOptions = &imap.FetchOptions{
	UID:          true,
	InternalDate: true,
	BodySection:  []*imap.FetchItemBodySection{bodyPeek},
}

// maxBatchBytes caps the mail one batch holds (a single larger mail is a
// batch of its own): with two batches in memory at once, an account's
// import holds at most about twice this, whatever BatchSize says and
// however large the mails are.
const maxBatchBytes = 16 << 20

// planBatches splits uids into batches of at most BatchSize mails and at
// most maxBytes of mail, and returns where each batch ends. The sizes come
// from two UID SEARCH ... LARGER (RFC 3501 section 6.4.4), which the
// server answers from its index without a line per mail: a mail counts as
// maxBytes/BatchSize when it is not larger than that, as maxBytes/8 when
// it is not larger than that, and as maxBytes otherwise (alone in its
// batch). A single mail needs no sizes.
func (s *session) planBatches(uids []imap.UID, maxBytes int64) ([]int, error) {
	if len(uids) <= 1 {
		return []int{len(uids)}, nil
	}
	small := maxBytes / int64(s.o.BatchSize)
	medium := max(small, maxBytes/8)
	var rng imap.UIDSet
	rng.AddRange(uids[0], uids[len(uids)-1])
	// Without ESEARCH, untagged SEARCH answers cannot be told apart: wait
	// for each in turn (see pollNew).
	esearch := s.caps.Has(imap.CapESearch)
	var opts *imap.SearchOptions
	if esearch {
		opts = &imap.SearchOptions{ReturnAll: true}
	}
	larger := func(n int64) *imapclient.SearchCommand {
		return s.c.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{rng}, Larger: n}, opts)
	}
	stop := s.guard()
	smallCmd := larger(small)
	var smallData *imap.SearchData
	var smallErr error
	if !esearch {
		smallData, smallErr = smallCmd.Wait()
	}
	mediumCmd := larger(medium)
	if esearch {
		smallData, smallErr = smallCmd.Wait()
	}
	mediumData, err := mediumCmd.Wait()
	stop()
	if err == nil {
		err = smallErr
	}
	if err != nil {
		return nil, fmt.Errorf("UID SEARCH LARGER: %w", err)
	}
	overSmall, _ := smallData.All.(imap.UIDSet)
	overMedium, _ := mediumData.All.(imap.UIDSet)
	var ends []int
	n, bytes := 0, int64(0)
	for i, u := range uids {
		size := small
		switch {
		case overMedium.Contains(u):
			size = maxBytes
		case overSmall.Contains(u):
			size = medium
		}
		if n > 0 && (n == s.o.BatchSize || bytes+size > maxBytes) {
			ends = append(ends, i)
			n, bytes = 0, 0
		}
		n++
		bytes += size
	}
	return append(ends, len(uids)), nil
}

// planWindow is how many UIDs startPlan plans before the first FETCH:
// the sizes of the rest are asked while the first batches are fetched and
// stored, so that the server's work on them is not waited for.
const planWindow = 200

// pendingPlan is planBatches running for the UIDs after the first window.
type pendingPlan struct {
	done chan planResult
}

type planResult struct {
	ends []int
	err  error
}

func (p *pendingPlan) wait() ([]int, error) {
	r := <-p.done
	return r.ends, r.err
}

// startPlan plans the batches of the first planWindow UIDs and returns
// where they end, with the plan of the rest (ends counted from the start
// of uids) on its way.
func (s *session) startPlan(uids []imap.UID) ([]int, *pendingPlan, error) {
	w := min(len(uids), planWindow)
	ends, err := s.planBatches(uids[:w], s.w.f.batchBytes)
	if err != nil || w == len(uids) {
		return ends, nil, err
	}
	p := &pendingPlan{done: make(chan planResult, 1)}
	go func() {
		more, err := s.planBatches(uids[w:], s.w.f.batchBytes)
		for i := range more {
			more[i] += w
		}
		p.done <- planResult{more, err}
	}()
	return ends, p, nil
}

// fetchedMail is one mail of a batch, fetched and parsed.
type fetchedMail struct {
	uid      imap.UID
	received time.Time // INTERNALDATE
	raw      []byte    // nil: the server sent no body
	parsed   *mailparse.Parsed
	parseErr error // the parser panicked

	// Gmail's X-GM-MSGID and X-GM-THRID, 0 without X-GM-EXT-1.
	gmMsgID, gmThrID uint64
}

// fetchedBatch is the answer to one UID FETCH: the mails the server
// returned, in the order it sent them (a UID asked for but missing was
// expunged since the search).
type fetchedBatch struct {
	mails []fetchedMail
	err   error
}

// pendingFetch is a UID FETCH in flight; wait returns its batch.
type pendingFetch struct {
	done chan *fetchedBatch
}

func (p *pendingFetch) wait() *fetchedBatch { return <-p.done }

// startFetch sends UID FETCH for uids and streams the answer in the
// background. The command is written before startFetch returns, so
// commands sent after it (the \Seen of the previous batch) are answered
// after it; the goroutine reads the literals as they come, which keeps the
// client's reader, and with it every other command's answer, moving.
func (s *session) startFetch(uids []imap.UID) *pendingFetch {
	p := &pendingFetch{done: make(chan *fetchedBatch, 1)}
	stop := s.guard()
	opts := fetchOptions
	if s.gmIDs() {
		opts = gmFetchOptions
	}
	cmd := s.c.Fetch(imap.UIDSetNum(uids...), opts)
	go func() {
		b := s.readBatch(cmd, len(uids))
		stop()
		p.done <- b
	}()
	return p
}

// readBatch reads the answer of cmd (at most n mails) and parses each mail
// on one of GOMAXPROCS workers as soon as its body is in.
func (s *session) readBatch(cmd *imapclient.FetchCommand, n int) *fetchedBatch {
	// The command answers each UID at most once, so mails never grows
	// past n and the pointers handed to the workers stay valid.
	b := &fetchedBatch{mails: make([]fetchedMail, 0, n)}
	jobs := make(chan *fetchedMail, n)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range jobs {
				s.parse(m)
			}
		}()
	}
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		if len(b.mails) == n {
			break // never: the client drops answers not asked for
		}
		m, err := readMail(msg)
		if err != nil {
			b.err = err
			break
		}
		b.mails = append(b.mails, m)
		jobs <- &b.mails[len(b.mails)-1]
	}
	close(jobs)
	if err := cmd.Close(); b.err == nil {
		b.err = err
	}
	wg.Wait()
	// Servers answer in mailbox order, which is UID order (RFC 3501
	// section 2.3.1.1); sorting makes sure, as the store threads a mail
	// onto tickets opened by mails before it in the batch.
	slices.SortFunc(b.mails, func(x, y fetchedMail) int { return cmp.Compare(x.uid, y.uid) })
	return b
}

// readMail reads one message of a FETCH answer. The body goes into a
// buffer of the literal's announced size: reading it with io.ReadAll
// would grow and copy the buffer several times per mail.
func readMail(msg *imapclient.FetchMessageData) (fetchedMail, error) {
	var m fetchedMail
	for item := msg.Next(); item != nil; item = msg.Next() {
		switch item := item.(type) {
		case imapclient.FetchItemDataUID:
			m.uid = item.UID
		case imapclient.FetchItemDataInternalDate:
			m.received = item.Time
		case imapclient.FetchItemDataBodySection:
			if item.Literal != nil && (item.MatchCommand(gmMsgIDSection) || item.MatchCommand(gmThrIDSection)) {
				b, err := io.ReadAll(item.Literal)
				if err != nil {
					return m, fmt.Errorf("read Gmail ids of uid %d: %w", m.uid, err)
				}
				if item.MatchCommand(gmMsgIDSection) {
					m.gmMsgID = gmID(b)
				} else {
					m.gmThrID = gmID(b)
				}
				continue
			}
			if item.Literal == nil || !item.MatchCommand(bodyPeek) {
				continue // NIL, or a section not asked for: discarded by Next
			}
			raw := make([]byte, item.Literal.Size())
			if _, err := io.ReadFull(item.Literal, raw); err != nil {
				return m, fmt.Errorf("read body of uid %d: %w", m.uid, err)
			}
			m.raw = raw
		}
	}
	return m, nil
}

// parse parses m.raw. mailparse recovers from panics in its own walk;
// this guard is for the rest, so that one strange mail fails alone (it is
// retried and quarantined like any failing mail) instead of taking the
// daemon down.
func (s *session) parse(m *fetchedMail) {
	if m.raw == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("imapfetch: panic parsing mail", "uid", m.uid, "panic", v, "stack", string(debug.Stack()))
			m.parsed, m.parseErr = nil, fmt.Errorf("panic parsing mail: %v", v)
		}
	}()
	m.parsed = s.w.f.parse(m.raw)
}
