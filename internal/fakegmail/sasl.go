package fakegmail

import (
	"errors"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"

	"github.com/mailgate/mailgate/internal/fakesasl"
)

const mechXOAUTH2 = "XOAUTH2"

// gmailChallenge is the error Gmail sends, as a base64 continuation request,
// when it rejects an XOAUTH2 or OAUTHBEARER token: the RFC 7628 section
// 3.2.2 JSON, byte for byte as imap.gmail.com sends it. On the wire:
//
//	S: + eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==
var gmailChallenge = fakesasl.GmailChallenge()

// errBadToken is what authFunc returns when Gmail would send gmailChallenge.
var errBadToken = errors.New("fakegmail: invalid credentials")

// errInvalidCredentials ends the exchange after gmailChallenge, and answers
// LOGIN, with Gmail's words.
var errInvalidCredentials = &imap.Error{
	Type: imap.StatusResponseTypeNo,
	Code: imap.ResponseCodeAuthenticationFailed,
	Text: "Invalid credentials (Failure)",
}

// errInvalidSASL is Gmail's answer to an initial response it cannot parse.
var errInvalidSASL = &imap.Error{
	Type: imap.StatusResponseTypeBad,
	Text: "Invalid SASL argument.",
}

type authFunc func(user, token string) error

// xoauth2Server is the server side of Google's XOAUTH2 mechanism
// (https://developers.google.com/gmail/imap/xoauth2-protocol):
//
//	C: AUTHENTICATE XOAUTH2 base64("user=" email ^A "auth=Bearer " token ^A ^A)
//	S: OK                         (token good)
//	S: + base64(gmailChallenge)   (token bad)
//	C: (empty line)
//	S: NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)
type xoauth2Server struct {
	auth     authFunc
	rejected bool
}

func (x *xoauth2Server) Next(resp []byte) (challenge []byte, done bool, err error) {
	if x.rejected {
		// Google asks for an empty response to the error challenge, but
		// whatever the client says, the exchange has failed.
		return nil, true, errInvalidCredentials
	}
	if resp == nil {
		// No SASL-IR: "+ " asks for the initial response.
		return nil, false, nil
	}
	user, token, err := fakesasl.ParseXOAUTH2(resp)
	if err != nil {
		return nil, true, errInvalidSASL
	}
	switch err := x.auth(user, token); {
	case err == nil:
		return nil, true, nil
	case errors.Is(err, errBadToken):
		x.rejected = true
		return gmailChallenge, false, nil
	default:
		return nil, true, err
	}
}

// oauthBearerServer adapts go-sasl's RFC 7628 server to Gmail's replies.
// go-sasl parses the GS2 message, but would report a bad token as an
// internal error (NO [SERVERBUG]) and panics if the client answers the
// error challenge with an empty line instead of %x01.
type oauthBearerServer struct {
	inner    sasl.Server
	authErr  error
	rejected bool
}

func newOAuthBearerServer(auth authFunc) *oauthBearerServer {
	o := &oauthBearerServer{}
	o.inner = sasl.NewOAuthBearerServer(func(opts sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
		if o.authErr = auth(opts.Username, opts.Token); o.authErr != nil {
			r := fakesasl.GmailRejection()
			return &sasl.OAuthBearerError{Status: r.Status, Schemes: r.Schemes, Scope: r.Scope}
		}
		return nil
	})
	return o
}

func (o *oauthBearerServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	if o.rejected {
		// RFC 7628 section 3.2.3: the client answers the error with %x01;
		// the server then fails the exchange.
		return nil, true, errInvalidCredentials
	}
	if resp == nil {
		return nil, false, nil
	}
	challenge, done, err = o.inner.Next(resp)
	switch {
	case err != nil:
		return nil, true, errInvalidSASL
	case done:
		return nil, true, nil
	case o.authErr == nil:
		// go-sasl could not parse the message.
		return nil, true, errInvalidSASL
	case !errors.Is(o.authErr, errBadToken):
		return nil, true, o.authErr
	}
	o.rejected = true
	return gmailChallenge, false, nil
}
