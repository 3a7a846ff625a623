package fakesmtp

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"

	"github.com/emersion/go-smtp"
)

// Gmail's replies, as a go-smtp client returns them: Message is the text
// after the enhanced code, lines joined with "\n". On the wire the Gmail
// fake adds " <id> - gsmtp" to the last line, as Gmail does, so compare with
// strings.HasPrefix, or better, by Code and EnhancedCode. For example
// ErrBadCredentials goes out as
//
//	535-5.7.8 Username and Password not accepted. For more information, go to
//	535 5.7.8  https://support.google.com/mail/?p=BadCredentials a1b2c3d4e5f6.3 - gsmtp
var (
	// ErrMustStartTLS answers AUTH, MAIL and RCPT before STARTTLS
	// (RFC 3207 section 4).
	ErrMustStartTLS = &smtp.SMTPError{
		Code:         530,
		EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message:      "Must issue a STARTTLS command first.",
	}
	// ErrAuthRequired answers MAIL before a successful AUTH (RFC 4954
	// section 6).
	ErrAuthRequired = &smtp.SMTPError{
		Code:         530,
		EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message:      "Authentication Required. For more information, go to\n https://support.google.com/mail/?p=WantAuthError",
	}
	// ErrBadCredentials ends a failed AUTH: after XOAUTH2's or
	// OAUTHBEARER's error challenge, or for any PLAIN/LOGIN password (the
	// fake has no app passwords).
	ErrBadCredentials = &smtp.SMTPError{
		Code:         535,
		EnhancedCode: smtp.EnhancedCode{5, 7, 8},
		Message:      "Username and Password not accepted. For more information, go to\n https://support.google.com/mail/?p=BadCredentials",
	}
	// ErrDailyLimit is Gmail's answer once an account has used its
	// rolling 24-hour sending quota. Older and Workspace servers say
	// "Daily user sending quota exceeded." on one line, same codes.
	ErrDailyLimit = &smtp.SMTPError{
		Code:         550,
		EnhancedCode: smtp.EnhancedCode{5, 4, 5},
		Message:      "Daily user sending limit exceeded. For more information on Gmail\nsending limits go to\n https://support.google.com/a/answer/166852",
	}
	// ErrTryAgainLater is Gmail's temporary refusal; the connection is
	// closed after it. Use it with FailNext.
	ErrTryAgainLater = &smtp.SMTPError{
		Code:         421,
		EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message:      "Try again later, closing connection.",
	}
	// ErrTooManyRecipients answers the RCPT after the 100th: Gmail takes
	// at most 100 recipients per message over SMTP.
	ErrTooManyRecipients = &smtp.SMTPError{
		Code:         452,
		EnhancedCode: smtp.EnhancedCode{4, 5, 3},
		Message:      "Your message has too many recipients. For more information regarding\nGoogle's sending limits, visit\n https://support.google.com/mail/?p=TooManyRecipientsError",
	}
	// ErrUnrecognizedAuth answers AUTH with a mechanism the fake does not
	// implement (PLAIN-CLIENTTOKEN, XOAUTH) or does not list.
	ErrUnrecognizedAuth = &smtp.SMTPError{
		Code:         504,
		EnhancedCode: smtp.EnhancedCode{5, 7, 4},
		Message:      "Unrecognized authentication type.",
	}
	// errAlreadyAuthenticated answers a second AUTH (RFC 4954 section 4).
	errAlreadyAuthenticated = &smtp.SMTPError{
		Code:         503,
		EnhancedCode: smtp.EnhancedCode{5, 5, 1},
		Message:      "Already authenticated",
	}
	// gmailAccepted is the reply to a successful AUTH. go-smtp would say
	// "235 2.0.0 Authentication succeeded"; returning a 235 "error" from the
	// SASL exchange makes it write Gmail's line instead (see saslExchange).
	gmailAccepted = &smtp.SMTPError{
		Code:         235,
		EnhancedCode: smtp.EnhancedCode{2, 7, 0},
		Message:      "Accepted",
	}
)

// gmailMechanisms is what smtp.gmail.com lists after STARTTLS, in its order.
var gmailMechanisms = []string{"LOGIN", "PLAIN", "XOAUTH2", "PLAIN-CLIENTTOKEN", "OAUTHBEARER", "XOAUTH"}

// gmailMaxSize is the SIZE smtp.gmail.com advertises.
const gmailMaxSize = 35882577

// gmailMaxRecipients is Google's per-message recipient limit over SMTP.
const gmailMaxRecipients = 100

// GmailOptions configures NewGmail.
type GmailOptions struct {
	// TLS is the server's certificate configuration (testcert's ServerTLS).
	// Required: like smtp.gmail.com:587 the server offers STARTTLS and
	// refuses AUTH and MAIL until it has been used.
	TLS *tls.Config
	// Implicit makes the listener speak TLS from the first byte, like
	// smtp.gmail.com:465.
	Implicit bool
	// Validate reports which account an OAuth access token belongs to
	// (fakeoauth's Server.Validate). XOAUTH2 and OAUTHBEARER succeed only
	// when ok is true and email matches, ignoring case, the user the
	// client names. Required.
	Validate func(accessToken string) (email string, ok bool)
	// Aliases lists each account's verified "Send mail as" addresses; a
	// message whose From header is neither the account nor one of them has
	// its From replaced by the account, and is marked FromRewritten.
	Aliases map[string][]string
	// Sent, if set, is called with each message accepted and the account
	// that sent it, as Gmail files what it sends in the account's Sent
	// folder (fakeworld appends it to the fake Gmail's).
	Sent func(account string, data []byte)
	// Logger receives go-smtp's connection errors. Nil discards them.
	Logger *slog.Logger
}

// NewGmail starts a fake smtp.gmail.com on 127.0.0.1:0.
//
// It behaves like Gmail's submission server where the relay depends on it:
//
//   - EHLO lists STARTTLS before TLS and, only after it,
//     "AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH";
//     SIZE 35882577, SMTPUTF8.
//   - AUTH, MAIL or RCPT before STARTTLS: ErrMustStartTLS; MAIL before
//     AUTH: ErrAuthRequired.
//   - AUTH XOAUTH2 with a token Validate accepts for that user:
//     "235 2.7.0 Accepted". Otherwise the 334 error challenge
//     {"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}
//     (base64) and, after the client's empty response, ErrBadCredentials.
//     OAUTHBEARER (RFC 7628) works the same way; PLAIN and LOGIN always
//     fail with ErrBadCredentials.
//   - More than 100 RCPTs: ErrTooManyRecipients.
//   - A message from an account marked with SetDailyLimitReached:
//     ErrDailyLimit. Gmail sends it in reply to the DATA command; go-smtp's
//     server always answers DATA with 354, so the fake sends it as the
//     reply to the end of the message. Either way the client sees a
//     550 5.4.5 during DATA and nothing is sent.
//   - Accepted: "250 2.0.0 OK  <unix time> <id> - gsmtp".
//   - MAIL FROM another address than the account is accepted, as Gmail
//     does; the envelope is recorded as given. A From header that is
//     neither the account nor one of its aliases is replaced by the
//     account's address (see FromRewritten).
func NewGmail(opts GmailOptions) (*Server, error) {
	if opts.TLS == nil {
		return nil, errors.New("fakesmtp: GmailOptions.TLS is required")
	}
	if opts.Validate == nil {
		return nil, errors.New("fakesmtp: GmailOptions.Validate is required")
	}
	s, err := newServer(kindGmail, opts.TLS, opts.Implicit, "smtp.gmail.com", opts.Logger)
	if err != nil {
		return nil, err
	}
	s.validate, s.sent = opts.Validate, opts.Sent
	s.aliases = make(map[string][]string, len(opts.Aliases))
	for acct, as := range opts.Aliases {
		key := strings.ToLower(acct)
		for _, a := range as {
			s.aliases[key] = append(s.aliases[key], strings.ToLower(a))
		}
	}
	s.srv.MaxMessageBytes = gmailMaxSize
	s.srv.EnableSMTPUTF8 = true
	return s, nil
}
