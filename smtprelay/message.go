package smtprelay

import (
	"encoding/json"
	"time"
)

// Message states.
const (
	// StateTentative: the SMTP side stored the message but has not (yet)
	// answered 250. It is never delivered: Confirm makes it queued just
	// before the 250, and one never confirmed is deleted once its accept
	// time is over (the client was told 451 and sends it again).
	StateTentative = "tentative"
	StateQueued    = "queued"   // waiting for a delivery worker
	StateSending   = "sending"  // a delivery worker is trying it now (Consumer, TryStarted)
	StateDeferred  = "deferred" // a try failed temporarily; NextAttempt says when again
	StateSent      = "sent"     // every recipient is delivered or failed, at least one delivered
	StateBounced   = "bounced"  // failed permanently or expired; a DSN went to the sender
)

// RcptState is where one recipient of a message stands.
type RcptState string

const (
	RcptPending   RcptState = "pending"   // not delivered yet: the next try sends to it
	RcptDelivered RcptState = "delivered" // its server took the message: never sent again
	RcptFailed    RcptState = "failed"    // failed for good: a DSN told the sender
)

// Recipient is one envelope recipient and what became of it, as chasquid
// keeps it: a try only goes to recipients still pending, so a recipient
// delivered once is never sent the message again, whatever happens to
// the others.
type Recipient struct {
	Addr  string    `json:"addr"`
	State RcptState `json:"state"`
	// Route is how it was delivered, or how it was last tried.
	Route Route `json:"route,omitempty"`
	// LastError is why its last try did not deliver it.
	LastError string `json:"last_error,omitempty"`
}

// Message is one accepted mail and its delivery state. Data (the raw
// RFC 5322 bytes) is loaded only when delivering or showing it.
type Message struct {
	ID   string `json:"id"`
	From string `json:"from"` // envelope sender; "" for a bounce
	// To are the envelope recipients as accepted; Rcpts says what became
	// of each.
	To          []string    `json:"to"`
	Rcpts       []Recipient `json:"rcpts"`
	Size        int         `json:"size"`
	Account     string      `json:"account,omitempty"` // the connected Gmail account it is from, if any
	Ticket      int64       `json:"ticket,omitempty"`
	MessageID   string      `json:"message_id,omitempty"`
	State       string      `json:"state"`
	Route       Route       `json:"route,omitempty"` // route of the last try: gmail, direct, smarthost, deferred
	Attempts    int         `json:"attempts"`        // tries begun, the one in progress included
	CreatedAt   time.Time   `json:"created_at"`
	NextAttempt time.Time   `json:"next_attempt,omitzero"`
	LastError   string      `json:"last_error,omitempty"`
	// Consumer and TryStarted say which delivery worker is trying the
	// message, and since when, while its state is StateSending.
	Consumer   string    `json:"consumer,omitempty"`
	TryStarted time.Time `json:"try_started,omitzero"`
	Data       []byte    `json:"-"`
	// DKIM is the signature made at the first direct try, sent again by
	// the next tries while the bytes signed and the keys stay the same.
	DKIM *savedSignature `json:"dkim,omitempty"`

	entry    string // stream entry id while a worker holds it
	consumer string // the worker that holds it
	// rev counts the writes of the message's record; a late write of an
	// older outcome never replaces a newer one (see saveScript).
	rev int64
	// accepted is when Redis stored the tentative message (its clock, ms)
	// and when we learnt it (our monotonic clock): Confirm's deadline is
	// counted from them. deadline is the last moment (Redis clock, ms) a
	// confirmation may take effect.
	acceptedRedis int64
	acceptedLocal time.Time
	deadline      int64
	// outcome: this try sent (or bounced) something, so its record must
	// reach Redis before the message is tried again. unbounced are the
	// failed recipients whose DSN could not be queued yet.
	outcome   bool
	unbounced map[string]error
}

// initRcpts gives each envelope recipient a pending state, once.
func (m *Message) initRcpts() {
	if len(m.Rcpts) > 0 {
		return
	}
	for _, rc := range m.To {
		m.Rcpts = append(m.Rcpts, Recipient{Addr: rc, State: RcptPending})
	}
}

// Pending returns the recipients not delivered yet, in envelope order.
func (m *Message) Pending() []string { return m.rcptsIn(RcptPending) }

// Delivered returns the recipients whose server took the message.
func (m *Message) Delivered() []string { return m.rcptsIn(RcptDelivered) }

// Failed returns the recipients that failed for good.
func (m *Message) Failed() []string { return m.rcptsIn(RcptFailed) }

func (m *Message) rcptsIn(s RcptState) []string {
	var out []string
	for _, r := range m.Rcpts {
		if r.State == s {
			out = append(out, r.Addr)
		}
	}
	return out
}

// apply records what a try did for each recipient in res: delivered and
// bounced recipients leave the pending ones for good; a deferred one
// stays pending with its error. A recipient already delivered or failed
// keeps its state: a result never takes one back.
func (m *Message) apply(route Route, res Result) {
	for _, rr := range res {
		for i := range m.Rcpts {
			r := &m.Rcpts[i]
			if r.Addr != rr.Rcpt || r.State != RcptPending {
				continue
			}
			r.Route = route
			switch rr.Outcome {
			case Delivered:
				r.State, r.LastError = RcptDelivered, ""
			case Bounced:
				r.State = RcptFailed
			}
			if rr.Err != nil {
				r.LastError = rr.Err.Error()
			}
			break
		}
	}
}

// merge takes into m what newer knows that m's record does not: a
// recipient delivered or failed in newer stays so. It is how a try's
// outcome kept in memory (Redis did not take it) is laid over the record
// read again from Redis.
func (m *Message) merge(newer *Message) {
	state := map[string]Recipient{}
	for _, r := range newer.Rcpts {
		if r.State != RcptPending {
			state[r.Addr] = r
		}
	}
	for i, r := range m.Rcpts {
		if n, ok := state[r.Addr]; ok && r.State == RcptPending {
			m.Rcpts[i] = n
		}
	}
	m.Attempts = max(m.Attempts, newer.Attempts)
	m.Route, m.LastError, m.NextAttempt, m.State = newer.Route, newer.LastError, newer.NextAttempt, newer.State
	m.rev = max(m.rev, newer.rev)
}

// decodeMeta reads a message's stored metadata. Records written before
// recipients had their own state hold the pending ones in "to" and the
// delivered ones in "done": they are read into Rcpts.
func decodeMeta(meta []byte) (*Message, error) {
	var v struct {
		Message
		Done []string `json:"done"`
	}
	if err := json.Unmarshal(meta, &v); err != nil {
		return nil, err
	}
	m := v.Message
	if len(m.Rcpts) == 0 {
		pending := m.To
		m.To = append(append([]string(nil), v.Done...), pending...)
		for _, rc := range v.Done {
			m.Rcpts = append(m.Rcpts, Recipient{Addr: rc, State: RcptDelivered})
		}
		for _, rc := range pending {
			m.Rcpts = append(m.Rcpts, Recipient{Addr: rc, State: RcptPending})
		}
	}
	return &m, nil
}
