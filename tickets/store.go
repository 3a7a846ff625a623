package tickets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/internal/rkey"
	"github.com/mailgate/mailgate/mailparse"
)

// Options configure a Store. cmd/mailgate builds them from config.
type Options struct {
	// Prefix starts every key ("mailgate:"). Under Redis Cluster a prefix
	// without a hash tag is wrapped in one, see NewStore.
	Prefix string
	// MaxRawBytes caps the raw message kept per mail; 0 means no cap.
	MaxRawBytes int64
	// StreamMaxLen trims the event stream approximately; 0 keeps all.
	StreamMaxLen int64
	// SenderRateLimit is how many mails one sender may turn into tickets
	// or comments per SenderRateWindow before the rest are suppressed as a
	// probable mail loop; 0 disables the limit.
	SenderRateLimit  int
	SenderRateWindow time.Duration
	// TokenThreadingAnyone lets a "[#1042]" subject token thread a mail
	// onto that ticket whoever sent it. False (the default): only a sender
	// who takes part in the ticket (its requester, a CC of one of its
	// mails, a support address) joins it by token; anyone else's mail
	// opens a new ticket with RelatedTicket set.
	TokenThreadingAnyone bool
	// SupportAddresses returns the addresses mail is received at (the
	// connected accounts and configured extras), lower-cased. May be nil.
	SupportAddresses func(ctx context.Context) ([]string, error)
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Store is the ticket store on Redis.
type Store struct {
	rdb  redis.UniversalClient
	opts Options
	p    string

	// The support addresses change when an account is connected, rarely;
	// asking for them on every mail cost two Redis round trips per ingest.
	mu        sync.Mutex
	support   map[string]bool
	supportAt time.Time

	// turns bounds the ingest scripts of this store in flight at once;
	// nextID is the id of the next new ticket as far as this store knows,
	// and opening counts the mails of its batches in flight that may open
	// one: together they size the ids a batch declares (see runScript).
	turns   chan struct{}
	nextID  atomic.Int64
	opening atomic.Int64
}

// supportTTL is how long the support addresses are reused: an account
// connected elsewhere counts as ours within that long.
const supportTTL = 2 * time.Second

// NewStore returns a Store on rdb. Under Redis Cluster every key shares the
// prefix's hash tag (see rkey.Prefix): the ingest script touches the dedupe
// index, the ticket and the stream at once.
func NewStore(rdb redis.UniversalClient, opts Options) *Store {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Store{rdb: rdb, opts: opts, p: rkey.Prefix(rdb, opts.Prefix), turns: make(chan struct{}, ingestTurns)}
}

// Source says where a mail came from.
type Source struct {
	// SupportAddress is the mailbox the mail arrived at; empty means the
	// first support address among its recipients, else its first To.
	SupportAddress string
	// Origin names the channel, e.g. "imap:support@example.com" or "cli".
	Origin string
	// SuppressTriggers marks tickets whose helpdesk automations must not
	// fire (the initial import of recent mail).
	SuppressTriggers bool
	// Tags are added to a ticket this mail creates.
	Tags []string
	// ReceivedAt is when the mail was received; zero means now.
	ReceivedAt time.Time
	// Agent marks mail an agent sent from the support mailbox itself (its
	// Sent folder, e.g. an answer written in Gmail's web interface). It
	// only joins a ticket its In-Reply-To or References name and one of
	// its recipients takes part in, as a public comment with role "agent"
	// and triggers suppressed; it never opens a ticket. Mail that threads
	// nowhere, that mailgate sent itself (RegisterSent, RegisterOutbound)
	// or that is automatic is skipped: Result.Skipped says why.
	Agent bool
	// GmailMsgID and GmailThreadID are Gmail's X-GM-MSGID and X-GM-THRID
	// of the mail (its X-GM-EXT-1 extension); 0 from other servers.
	GmailMsgID, GmailThreadID uint64
}

// Result tells what Ingest did.
type Result struct {
	Ticket     int64
	Comment    int64  // 1-based index of the comment in its ticket
	Created    bool   // a new ticket was opened
	Duplicate  bool   // the mail was ingested before; nothing was written
	ThreadedBy string // rule that attached a reply ("" for new tickets)
	// RelatedTicket and RelatedReason are those of the new ticket (see
	// Ticket); zero and empty otherwise.
	RelatedTicket int64
	RelatedReason string
	EventID       string // stream entry id of the event ("" for duplicates)
	// Suppressed says why the mail opened no ticket and added no comment
	// (one of the Noise* reasons); Ticket is then the ticket it concerns,
	// or 0.
	Suppressed string
	// Skipped says why an agent's mail (Source.Agent) was left out:
	// nothing was written. One of the Skip* reasons.
	Skipped string
}

// Why an agent's mail from the Sent folder was skipped.
const (
	// SkipOutbound: mailgate sent it (its Message-ID is registered); the
	// helpdesk has it already.
	SkipOutbound = "outbound"
	// SkipUnthreaded: it answers no ticket (or none its recipients take
	// part in): an agent's private mail is none of the helpdesk's business.
	SkipUnthreaded = "unthreaded"
	// SkipAutomatic: an automatic mail (auto-reply, bounce).
	SkipAutomatic = "automatic"
)

// Ingest turns one raw RFC 5322 message into a ticket or a comment,
// exactly once: a mail already ingested (same Message-ID, or same bytes
// when it has none) returns its ticket and writes nothing.
func (s *Store) Ingest(ctx context.Context, raw []byte, src Source) (Result, error) {
	return s.IngestParsed(ctx, raw, mailparse.Parse(raw), src)
}

// IngestParsed is Ingest for a message the caller already parsed: a
// batch of one (see IngestBatch).
func (s *Store) IngestParsed(ctx context.Context, raw []byte, m *mailparse.Parsed, src Source) (Result, error) {
	r := s.IngestBatch(ctx, []BatchMail{{Raw: raw, Parsed: m, Source: src}})[0]
	return r.Result, r.Err
}

// RegisterOutbound records the Message-ID of a mail the helpdesk sent about
// ticket id, so that a customer's reply to it threads onto that ticket.
func (s *Store) RegisterOutbound(ctx context.Context, id int64, messageID string) error {
	messageID = strings.Trim(strings.TrimSpace(messageID), "<>")
	if messageID == "" {
		return errors.New("register outbound: empty Message-ID")
	}
	n, err := s.rdb.Exists(ctx, s.ticketKey(id)).Result()
	if err != nil {
		return s.fail(ctx, fmt.Errorf("register outbound %s for #%d: %w", messageID, id, err))
	}
	if n == 0 {
		return fmt.Errorf("register outbound %s: %w: #%d", messageID, ErrNotFound, id)
	}
	return s.fail(ctx, s.rdb.Set(ctx, s.msgKey(messageID), id, 0).Err())
}

// sentTTL is how long RegisterSent remembers a Message-ID: its copy in the
// Sent folder is read within a poll interval, or, after an outage, when
// fetching resumes.
const sentTTL = 30 * 24 * time.Hour

// RegisterSent records the Message-ID of any mail mailgate sent, ticket or
// not, so that the copy Gmail keeps in the Sent folder is skipped rather
// than added to a ticket as an agent's answer (Source.Agent). It is
// remembered for 30 days.
func (s *Store) RegisterSent(ctx context.Context, messageID string) error {
	messageID = strings.Trim(strings.TrimSpace(messageID), "<>")
	if messageID == "" {
		return errors.New("register sent: empty Message-ID")
	}
	return s.fail(ctx, s.rdb.Set(ctx, s.outboundKey(messageID), 1, sentTTL).Err())
}

// ErrNotFound is returned for a ticket that does not exist.
var ErrNotFound = errors.New("no such ticket")

func (s *Store) supportSet(ctx context.Context) (map[string]bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if s.support != nil && now.Sub(s.supportAt) < supportTTL && !now.Before(s.supportAt) {
		return s.support, nil
	}
	set := map[string]bool{}
	if s.opts.SupportAddresses != nil {
		addrs, err := s.opts.SupportAddresses(ctx)
		if err != nil {
			return nil, fmt.Errorf("support addresses: %w", err)
		}
		for _, a := range addrs {
			set[strings.ToLower(a)] = true
		}
	}
	// The map is shared read-only from here on.
	s.support, s.supportAt = set, now
	return set, nil
}

// fail passes err through, and on a connection error makes a cluster client
// reload its slot map at once: go-redis only does so on MOVED or every 60 s,
// so after a master dies it would keep failing for about a minute.
func (s *Store) fail(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var nerr net.Error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok && (errors.As(err, &nerr) || errors.Is(err, redis.ErrClosed)) {
		cc.ReloadState(ctx)
	}
	return err
}
