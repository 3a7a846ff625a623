package fakesmtp

import (
	"bytes"
	"encoding/base64"
	"strings"

	"github.com/emersion/go-sasl"

	"github.com/mailgate/mailgate/internal/fakesasl"
	"github.com/mailgate/mailgate/oauth"
)

// gmailTokenError is what Gmail's XOAUTH2 and OAUTHBEARER challenge says for
// any rejected token.
var gmailTokenError = fakesasl.GmailRejection()

// The SASL exchanges end in one of two ways that go-smtp cannot express
// with its defaults: success must read "235 2.7.0 Accepted" and failure
// "535 5.7.8 ..." (go-smtp would say "235 2.0.0 Authentication succeeded" and
// turn a plain error into 454). Both are returned from Next as an
// *smtp.SMTPError, which go-smtp writes verbatim; the session, not go-smtp,
// then remembers the user.

// succeed records user as authenticated and returns the success reply.
func (ss *session) succeed(user string) (challenge []byte, done bool, err error) {
	ss.authUser = user
	if ss.gmail() {
		return nil, true, ss.reply(gmailAccepted)
	}
	return nil, true, ss.reply(mxAccepted)
}

func (ss *session) refuse() (challenge []byte, done bool, err error) {
	if ss.gmail() {
		return nil, true, ss.reply(ErrBadCredentials)
	}
	return nil, true, ss.reply(errMXAuthFailed)
}

// challenge logs and returns a 334 challenge.
func (ss *session) challenge(c []byte) (challenge []byte, done bool, err error) {
	ss.logf("S: 334 %s", base64.StdEncoding.EncodeToString(c))
	return c, false, nil
}

// xoauth2Exchange is Gmail's XOAUTH2 (https://developers.google.com/gmail/imap/xoauth2-protocol)
// on top of fakesasl's server:
//
//	C: AUTH XOAUTH2 base64("user=" email ^A "auth=Bearer " token ^A ^A)
//	S: 235 2.7.0 Accepted                      (token good)
//	S: 334 base64(gmailTokenError)             (token bad)
//	C: (empty line)
//	S: 535-5.7.8 Username and Password not accepted. ...
type xoauth2Exchange struct {
	ss      *session
	inner   sasl.Server
	user    string // the account Validate named, once it accepted
	started bool
}

func newXOAUTH2Exchange(ss *session) *xoauth2Exchange {
	x := &xoauth2Exchange{ss: ss}
	x.inner = fakesasl.NewXOAUTH2Server(func(user, token string) *oauth.XOAUTH2Error {
		email, ok := ss.s.validate(token)
		if !ok || !strings.EqualFold(email, user) {
			return gmailTokenError
		}
		x.user = email
		return nil
	})
	return x
}

func (x *xoauth2Exchange) Next(resp []byte) (challenge []byte, done bool, err error) {
	x.logResponse(resp)
	if user, _, perr := fakesasl.ParseXOAUTH2(resp); perr == nil && x.ss.s.authError(user) != nil {
		return nil, true, x.ss.reply(x.ss.s.authError(user))
	}
	c, done, err := x.inner.Next(resp)
	switch {
	case err != nil:
		return x.ss.refuse()
	case done:
		return x.ss.succeed(x.user)
	}
	return x.ss.challenge(c)
}

// logResponse logs the client's line without the token.
func (x *xoauth2Exchange) logResponse(resp []byte) {
	first := !x.started
	x.started = true
	var what string
	switch {
	case resp == nil:
	case len(resp) == 0:
		what = "(empty)"
	default:
		if user, _, err := fakesasl.ParseXOAUTH2(resp); err == nil {
			what = "user=" + user + " auth=Bearer [redacted]"
		} else {
			what = "[unparsable initial response]"
		}
	}
	switch {
	case first && what == "":
		x.ss.logf("C: AUTH XOAUTH2")
	case first:
		x.ss.logf("C: AUTH XOAUTH2 %s", what)
	default:
		x.ss.logf("C: %s", what)
	}
}

// oauthBearerExchange is RFC 7628 OAUTHBEARER, parsed by go-sasl. go-sasl
// would end a bad token with an internal error (454 here) and panics if the
// client answers the error challenge with an empty line instead of %x01, so
// the error path is handled here.
type oauthBearerExchange struct {
	ss         *session
	inner      sasl.Server
	user       string
	started    bool
	challenged bool
}

func newOAuthBearerExchange(ss *session) *oauthBearerExchange {
	o := &oauthBearerExchange{ss: ss}
	o.inner = sasl.NewOAuthBearerServer(func(opts sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
		email, ok := ss.s.validate(opts.Token)
		if !ok || !strings.EqualFold(email, opts.Username) {
			return &sasl.OAuthBearerError{Status: gmailTokenError.Status, Schemes: gmailTokenError.Schemes, Scope: gmailTokenError.Scope}
		}
		o.user = email
		return nil
	})
	return o
}

func (o *oauthBearerExchange) Next(resp []byte) (challenge []byte, done bool, err error) {
	if !o.started {
		o.started = true
		if resp == nil {
			o.ss.logf("C: AUTH OAUTHBEARER")
		} else {
			o.ss.logf("C: AUTH OAUTHBEARER %s", bearerSummary(resp))
		}
	} else if o.challenged {
		o.ss.logf("C: (response to the error challenge)")
	} else {
		o.ss.logf("C: %s", bearerSummary(resp))
	}
	if o.challenged {
		// RFC 7628 section 3.2.3: whatever the client answers, the
		// exchange has failed.
		return o.ss.refuse()
	}
	c, done, err := o.inner.Next(resp)
	switch {
	case err != nil:
		return o.ss.refuse()
	case done:
		return o.ss.succeed(o.user)
	case len(c) > 0: // the JSON error challenge
		o.challenged = true
		return o.ss.challenge(fakesasl.GmailChallenge())
	}
	return o.ss.challenge(c) // empty: asks for the initial response
}

// bearerSummary describes an OAUTHBEARER client message without its token.
func bearerSummary(resp []byte) string {
	gs2, _, _ := bytes.Cut(resp, []byte{0x01})
	return string(bytes.TrimSuffix(gs2, []byte(","))) + " auth=Bearer [redacted]"
}

// passwordExchange is PLAIN (RFC 4616) and LOGIN
// (draft-murchison-sasl-login), checked by check.
type passwordExchange struct {
	ss       *session
	mech     string
	check    func(user, pass string) bool
	step     int
	user     string
	haveUser bool
}

func newPasswordExchange(ss *session, mech string, check func(user, pass string) bool) *passwordExchange {
	return &passwordExchange{ss: ss, mech: mech, check: check}
}

func (p *passwordExchange) Next(resp []byte) (challenge []byte, done bool, err error) {
	p.step++
	if p.step == 1 {
		p.ss.logf("C: AUTH %s [credentials redacted]", p.mech)
	} else {
		p.ss.logf("C: [redacted]")
	}
	if p.mech == sasl.Plain {
		if resp == nil && p.step == 1 {
			return p.ss.challenge([]byte{})
		}
		parts := bytes.Split(resp, []byte{0})
		if len(parts) != 3 {
			return p.ss.refuse()
		}
		return p.finish(string(parts[1]), string(parts[2]))
	}
	// LOGIN: the username may come as the initial response (go-sasl's
	// client sends it so) or after "Username:".
	switch {
	case p.step == 1 && resp == nil:
		return p.ss.challenge([]byte("Username:"))
	case !p.haveUser:
		p.user, p.haveUser = string(resp), true
		return p.ss.challenge([]byte("Password:"))
	}
	return p.finish(p.user, string(resp))
}

func (p *passwordExchange) finish(user, pass string) ([]byte, bool, error) {
	if user == "" || !p.check(user, pass) {
		return p.ss.refuse()
	}
	return p.ss.succeed(user)
}
