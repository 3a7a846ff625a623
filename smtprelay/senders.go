package smtprelay

// This file holds the sender policy, in one place for the envelope sender
// (MAIL FROM) and the header From: an address may be sent from when it is
// a support address or matches relay.allowed_senders. An account's
// "Send mail as" aliases are support addresses, so they may be sent from
// without being listed in relay.allowed_senders.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// allowedSender reports whether addr (lower-cased) matches one of
// relay.allowed_senders: a whole address, or a domain without "@".
func allowedSender(addr string, allowed []string) bool {
	_, domain, _ := strings.Cut(addr, "@")
	for _, a := range allowed {
		a = strings.ToLower(a)
		if a == addr || !strings.Contains(a, "@") && a == domain {
			return true
		}
	}
	return false
}

// foreignAddress returns the first of addrs (lower-cased) that is neither
// in relay.allowed_senders nor a support address, or "" when all may be
// sent from. The support addresses are read at most once.
func (x *session) foreignAddress(addrs []string) (string, error) {
	var rest []string
	for _, a := range addrs {
		if !allowedSender(a, x.access.AllowedSenders) {
			rest = append(rest, a)
		}
	}
	if len(rest) == 0 {
		return "", nil
	}
	if x.s.opts.SupportAddresses == nil {
		return rest[0], nil
	}
	start := time.Now()
	support, err := x.s.opts.SupportAddresses(context.Background())
	x.s.lookups.Report(context.Background(), start, err)
	if err != nil {
		return "", err
	}
	ours := make(map[string]bool, len(support))
	for _, a := range support {
		ours[a] = true
	}
	for _, a := range rest {
		if !ours[a] {
			return a, nil
		}
	}
	return "", nil
}

// checkHeaderFrom refuses, at the end of DATA, a message whose header From
// names an address the relay may not send from. The envelope check alone
// would let a relay user put anyone's address in From, which is what the
// recipient sees, what DMARC aligns on and what the relay DKIM-signs
// (RFC 5322 section 3.6.2, RFC 7489 section 3.1): the relay must not be a
// tool for forging other people's mail, nor sign it. A message without
// From is left to the check that requires one.
func (x *session) checkHeaderFrom(hd header) error {
	if !hd.ok || !hd.h.Has("From") {
		return nil
	}
	if len(hd.authors) == 0 {
		return x.refuse("DATA", RejectHeaderFrom, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: "The From header cannot be read as a list of addresses, so it cannot be checked against the support addresses"})
	}
	foreign, err := x.foreignAddress(hd.authors)
	if err != nil { // logged by x.s.lookups
		return x.refuse("DATA", RejectQueue, errQueueDown)
	}
	if foreign != "" {
		return x.refuse("DATA", RejectHeaderFrom, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: fmt.Sprintf("From header address <%s> refused: not a support address nor in relay.allowed_senders (mailgate does not send mail in other people's names)", printable(foreign))})
	}
	return nil
}
