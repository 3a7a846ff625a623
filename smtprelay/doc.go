// Package smtprelay is the helpdesk's outgoing mail server: it accepts
// notifications over SMTP (go-smtp), stores each durably in Redis before
// answering 250, then routes it — via the account's Gmail SMTP while under
// Google's daily quota, else DKIM-signed to the recipients' MX or a
// smarthost — retrying with backoff and bouncing (RFC 3464) what cannot be
// delivered. It is never an open relay.
//
// The listener (server.go) lets only the helpdesk's own addresses send,
// in the envelope and in the header From (senders.go, envelope.go), takes
// passwords only over TLS or loopback, limits password guessing
// (authlimit.go) and logs each refusal, rate-limited per client
// (lograte.go).
//
// Each delivery try (Relay.Process) decides once how the message goes (a
// Route, and a typed reason when not via Gmail), delivers it through that
// route's courier, and records what became of each recipient. A Gmail
// refusal (its daily limit, a revoked grant) is one more decision in the
// same try, for the recipients Gmail refused.
//
// The queue (queue*.go, message.go) keeps each recipient's state, so a
// recipient delivered once is not sent the message again; a message is
// tentative until the 250 (never delivered after a 451), sending while a
// worker tries it, and the queue is made again when Redis loses it.
package smtprelay
