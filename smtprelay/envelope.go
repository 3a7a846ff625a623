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

	"unicode/utf8"

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
	code   smtp.EnhancedCode
}

func (e *addressError) Error() string {
	who := "recipient"
	if e.sender {
		who = "sender"
	}
	return fmt.Sprintf("%s address <%s> refused: %s", who, printable(e.addr), e.why)
}

// status is the RFC 3463 code: 5.1.7 bad sender mailbox address syntax,
// 5.1.3 bad destination mailbox address syntax; or the one it was given.
func (e *addressError) status() smtp.EnhancedCode {
	if e.code != (smtp.EnhancedCode{}) {
		return e.code
	}
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
// Address literals (user@[192.0.2.1]) are refused for the same reason.
// UTF-8 addresses (RFC 6531) are accepted when they are valid UTF-8 and
// their domain converts to an ASCII one (IDNA); that the client said
// SMTPUTF8 for them is checked by checkUTF8Declared.
func checkAddress(addr string, sender bool) *addressError {
	bad := func(format string, args ...any) *addressError {
		return &addressError{addr: addr, sender: sender, why: fmt.Sprintf(format, args...)}
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c < 0x20 || c == 0x7f {
			return bad("it contains the control character %#02x", c)
		}
	}
	if !utf8.ValidString(addr) {
		return bad("it contains bytes that are not UTF-8")
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
	case !dnsname.Valid(asciiDomain(domain)):
		return bad("%q is not a valid domain name (letters, digits and hyphens between dots, or an IDN)", domain)
	}
	// The account store reads senders with net/mail: what it could not
	// read would fail the route decision on every try.
	if _, err := accounts.NormalizeEmail(addr); err != nil {
		return bad("it cannot be read as a plain address user@domain")
	}
	return nil
}

// checkSubmitted checks an address given at MAIL FROM or RCPT TO, in a
// transaction whose MAIL FROM said SMTPUTF8 or not (utf8).
func checkSubmitted(addr string, sender, utf8 bool) *addressError {
	if bad := checkUTF8Declared(addr, sender, utf8); bad != nil {
		return bad
	}
	return checkAddress(addr, sender)
}

// checkUTF8Declared refuses a non-ASCII address from a client that did
// not say SMTPUTF8 on MAIL FROM: 553 5.6.7, as RFC 6531 section 3.7.4.1
// asks, telling it what to do.
func checkUTF8Declared(addr string, sender, declared bool) *addressError {
	if declared || isASCII(addr) {
		return nil
	}
	return &addressError{addr: addr, sender: sender, code: smtp.EnhancedCode{5, 6, 7},
		why: "it contains non-ASCII characters: say SMTPUTF8 on MAIL FROM to send them (RFC 6531)"}
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

// isAtext: RFC 6532 section 3.2 adds UTF-8 beyond ASCII to atext.
func isAtext(c byte) bool {
	return c >= 0x80 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
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
