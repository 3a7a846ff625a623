package tickets

import (
	"strconv"
	"strings"
)

// Every Redis key the store touches is named here, under the store's
// prefix (see the README's "Redis keys"). The ingest script names none
// itself: it gets each of its keys from these helpers, in KEYS.

// Key returns the full Redis key for a name under the store's prefix
// ("events" → "mailgate:events"). Helpdesks and the CLI use it to find the
// stream and the raw messages.
func (s *Store) Key(name string) string { return s.p + name }

func (s *Store) seqKey() string        { return s.Key("seq") }     // the last ticket id
func (s *Store) ticketsKey() string    { return s.Key("tickets") } // sorted set of ids
func (s *Store) eventsKey() string     { return s.Key("events") }  // the stream
func (s *Store) quarantineKey() string { return s.Key("quarantine") }

// seenKey marks a mail as ingested, by dedupeKey.
func (s *Store) seenKey(dedupe string) string { return s.Key("seen:" + dedupe) }

// msgKey says which ticket a Message-ID belongs to, inbound or outbound.
func (s *Store) msgKey(messageID string) string { return s.Key("msg:" + messageID) }

// outboundKey marks a Message-ID of mail mailgate sent (RegisterSent), so
// that its copy in the Sent folder is not read back as an agent's answer.
func (s *Store) outboundKey(messageID string) string { return s.Key("outbound:" + messageID) }

// gmThreadKey says which ticket a Gmail conversation (X-GM-THRID) of the
// account that origin names belongs to: the first ticket a mail of it
// opened or joined.
func (s *Store) gmThreadKey(origin string, thrID uint64) string {
	return s.Key("gmthread:" + strings.ToLower(origin) + ":" + strconv.FormatUint(thrID, 10))
}

// rateKey counts one sender's mails in the rate window.
func (s *Store) rateKey(sender string) string { return s.Key("rate:" + sender) }

// rawRef and blobRef name stored bytes relative to the prefix, as a
// comment's Raw field and the store's callers (Raw) use them.
func rawRef(sha string) string  { return "raw:" + sha }
func blobRef(sha string) string { return "blob:" + sha }

// unusedKey stands in KEYS for a key that this call of the ingest script
// does not use (no Message-ID, no rate limit), so that every other key
// keeps its place. The script never reads nor writes it.
func (s *Store) unusedKey() string { return s.Key("unused") }

func (s *Store) ticketKey(id int64) string { return s.ticketKeys(strconv.FormatInt(id, 10)).hash }

// ticketKeySet are the keys of one ticket.
type ticketKeySet struct {
	hash     string // data JSON, status, updated_at, comment_count
	comments string // list of comment JSON, without their ids
	people   string // who may thread by headers
	threaded string // the rule that threaded each comment, by index
}

func (s *Store) ticketKeys(id string) ticketKeySet {
	k := s.Key("ticket:" + id)
	return ticketKeySet{hash: k, comments: k + ":comments", people: k + ":people", threaded: k + ":threaded"}
}
