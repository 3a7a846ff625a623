package smtprelay

// This file checks envelope addresses: once at MAIL FROM and RCPT TO, so
// that the helpdesk hears at once what cannot be delivered, and again
// before each delivery try, so that an address already queued (by an older
// version, or written into the queue by another tool) bounces at its first
// try instead of being retried until the queue lifetime ends.

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/internal/dnsname"
)

// Address form limits of RFC 5321 section 4.5.3.1: 64 octets of local
// part, and a path of 256 octets including its angle brackets.
const (
	maxLocalPart = 64
	maxAddress   = 254
)

// addressError is an envelope address that no route can deliver: its form
// is refused, so retrying can never change the outcome (permanent, see
// isTemporary).
type addressError struct {
	addr   string
	sender bool   // MAIL FROM rather than RCPT TO
	why    string // what is wrong, in words
}

func (e *addressError) Error() string {
	who := "recipient"
	if e.sender {
		who = "sender"
	}
	return fmt.Sprintf("%s address <%s> refused: %s", who, printable(e.addr), e.why)
}

// status is the RFC 3463 code: 5.1.7 bad sender mailbox address syntax,
// 5.1.3 bad destination mailbox address syntax.
func (e *addressError) status() smtp.EnhancedCode {
	if e.sender {
		return smtp.EnhancedCode{5, 1, 7}
	}
	return smtp.EnhancedCode{5, 1, 3}
}

// reply is the answer to MAIL FROM or RCPT TO. 553 is "mailbox name not
// allowed (e.g., mailbox syntax incorrect)" (RFC 5321 section 4.2.2): it
// fits malformed addresses and legal forms that mailgate refuses alike.
func (e *addressError) reply() *smtp.SMTPError {
	msg := e.Error()
	return &smtp.SMTPError{Code: 553, EnhancedCode: e.status(), Message: strings.ToUpper(msg[:1]) + msg[1:]}
}

// checkSender checks a MAIL FROM address; "" (the null reverse path) is
// left to the sender policy.
func checkSender(addr string) *addressError { return checkAddress(addr, true) }

// checkRecipient checks a RCPT TO address.
func checkRecipient(addr string) *addressError { return checkAddress(addr, false) }

// checkAddress says what keeps addr from being relayed by every route
// (Gmail, MX hosts, smarthost), or nil. addr is as go-smtp's server hands
// it over: a quoted local part arrives unquoted ("john doe"@x.test as
// john doe@x.test).
//
// Quoted local parts are legal (RFC 5321 section 4.1.2) but refused:
// go-smtp's client writes the address as it is given, so each route would
// need to quote it again, Gmail accounts never have one, and the account
// store refuses them. A quoted local part that needs no quotes ("john"@x)
// is the same mailbox as john@x and arrives as such, so it is accepted.
// Address literals (user@[192.0.2.1]) and non-ASCII addresses (which need
// SMTPUTF8, RFC 6531, not offered here) are refused for the same reason.
func checkAddress(addr string, sender bool) *addressError {
	bad := func(format string, args ...any) *addressError {
		return &addressError{addr: addr, sender: sender, why: fmt.Sprintf(format, args...)}
	}
	for i := 0; i < len(addr); i++ {
		switch c := addr[i]; {
		case c < 0x20 || c == 0x7f:
			return bad("it contains the control character %#02x", c)
		case c >= 0x80:
			return bad("it contains non-ASCII characters, which need SMTPUTF8 (RFC 6531); mailgate does not offer it")
		}
	}
	if len(addr) > maxAddress {
		return bad("%d characters, more than the %d an address may have (RFC 5321 section 4.5.3.1.3)", len(addr), maxAddress)
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return bad("not of the form local-part@domain")
	}
	local, domain := addr[:at], addr[at+1:]
	switch {
	case local == "":
		return bad("the local part (before the @) is empty")
	case len(local) > maxLocalPart:
		return bad("the local part has %d characters, more than %d (RFC 5321 section 4.5.3.1.1)", len(local), maxLocalPart)
	case !dotString(local):
		return bad("the local part %s needs quoting; mailgate relays only unquoted local parts: letters, digits and !#$%%&'*+-/=?^_`{|}~, with single dots between them (RFC 5321 section 4.1.2 Dot-string)", strconv.Quote(local))
	case strings.HasPrefix(domain, "["):
		return bad("address literals such as %s are not relayed; use a domain name", domain)
	case !dnsname.Valid(domain):
		return bad("%q is not a valid domain name (letters, digits and hyphens between dots; IDNs as xn--)", domain)
	}
	// The account store reads senders with net/mail: what it could not
	// read would fail the route decision on every try.
	if _, err := accounts.NormalizeEmail(addr); err != nil {
		return bad("it cannot be read as a plain address user@domain")
	}
	return nil
}

// dotString reports whether s is a Dot-string of RFC 5321 section 4.1.2:
// atoms of atext (RFC 5322 section 3.2.3) joined by single dots.
func dotString(s string) bool {
	for atom := range strings.SplitSeq(s, ".") {
		if atom == "" {
			return false
		}
		for i := 0; i < len(atom); i++ {
			if !isAtext(atom[i]) {
				return false
			}
		}
	}
	return true
}

func isAtext(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// printable shows addr with control and non-ASCII bytes escaped (\x00), so
// that an SMTP reply, a log line or a DSN never carries them.
func printable(addr string) string {
	q := strconv.QuoteToASCII(addr)
	return q[1 : len(q)-1]
}

// isAddressError reports whether err is an envelope address no route can
// deliver.
func isAddressError(err error) bool {
	var ae *addressError
	return errors.As(err, &ae)
}

// undeliverable returns a Bounced result for each of rcpts that no route
// can deliver (all of them when the sender from is such an address), and
// the recipients left to try.
func undeliverable(from string, rcpts []string) (bad Result, rest []string) {
	var fromErr *addressError
	if from != "" {
		fromErr = checkSender(from)
	}
	for _, rc := range rcpts {
		err := fromErr
		if err == nil {
			err = checkRecipient(rc)
		}
		if err != nil {
			bad = append(bad, RcptResult{Rcpt: rc, Outcome: Bounced, Err: err})
			continue
		}
		rest = append(rest, rc)
	}
	return bad, rest
}
