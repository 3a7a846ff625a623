// Package fakesasl is the server side of Google's XOAUTH2 SASL mechanism
// (https://developers.google.com/gmail/imap/xoauth2-protocol), for the fake
// Gmail servers and the tests of the oauth package's clients. mailgate
// itself only ever speaks the client side (package oauth), so none of this
// belongs in the production binary.
package fakesasl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-sasl"

	"github.com/mailgate/mailgate/oauth"
)

// GmailRejection is what Gmail's XOAUTH2 and OAUTHBEARER error challenge
// says for any token it refuses, on IMAP and SMTP alike:
// {"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}.
// (Google's XOAUTH2 page shows an older example with status 401 and
// schemes "bearer mac"; live servers send this one.)
func GmailRejection() *oauth.XOAUTH2Error {
	return &oauth.XOAUTH2Error{Status: "400", Schemes: "Bearer", Scope: oauth.GmailScope}
}

// GmailChallenge is GmailRejection as the challenge bytes a server sends.
func GmailChallenge() []byte { return encode(GmailRejection()) }

// ParseXOAUTH2 parses an XOAUTH2 initial response,
// "user=" email ^A "auth=Bearer " token ^A ^A.
func ParseXOAUTH2(ir []byte) (user, token string, err error) {
	rest, ok := bytes.CutSuffix(ir, []byte("\x01\x01"))
	if !ok {
		return "", "", errors.New("fakesasl: XOAUTH2 response does not end in ^A^A")
	}
	var gotUser, gotAuth bool
	for _, field := range bytes.Split(rest, []byte{0x01}) {
		k, v, ok := bytes.Cut(field, []byte("="))
		if !ok {
			return "", "", errors.New("fakesasl: XOAUTH2 field without '='")
		}
		switch string(k) {
		case "user":
			user, gotUser = string(v), true
		case "auth":
			scheme, tok, ok := strings.Cut(string(v), " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				return "", "", errors.New("fakesasl: XOAUTH2 auth is not a Bearer token")
			}
			token, gotAuth = tok, true
		default:
			return "", "", fmt.Errorf("fakesasl: XOAUTH2 unknown field %q", k)
		}
	}
	if !gotUser || user == "" || !gotAuth || token == "" {
		return "", "", errors.New("fakesasl: XOAUTH2 response lacks user or auth")
	}
	return user, token, nil
}

// ErrorChallenge returns the JSON challenge a server sends when it
// rejects a token, as Gmail does. The bytes are unencoded: go-imap and
// go-smtp servers base64 them on the wire.
func ErrorChallenge(status string, scope string) []byte {
	return encode(&oauth.XOAUTH2Error{Status: status, Schemes: "Bearer", Scope: scope})
}

func encode(e *oauth.XOAUTH2Error) []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic(err) // three strings always marshal
	}
	return b
}

// NewXOAUTH2Server returns a go-sasl server for XOAUTH2. authenticate
// returns nil to accept user and token; otherwise its error is sent as the
// JSON challenge and, after the client's (empty) response, returned as the
// final error. go-smtp turns a plain error into 454 4.7.0 and go-imap into
// NO, so wrap the returned server if the fake must answer like Gmail
// (535 5.7.8 / NO [AUTHENTICATIONFAILED]).
func NewXOAUTH2Server(authenticate func(user, token string) *oauth.XOAUTH2Error) sasl.Server {
	return &xoauth2Server{authenticate: authenticate}
}

type xoauth2Server struct {
	authenticate func(user, token string) *oauth.XOAUTH2Error
	failed       *oauth.XOAUTH2Error
	done         bool
}

func (s *xoauth2Server) Next(response []byte) (challenge []byte, done bool, err error) {
	if s.failed != nil {
		// Any response ends the exchange; the client was told why already.
		return nil, true, s.failed
	}
	if s.done {
		return nil, true, sasl.ErrUnexpectedClientResponse
	}
	if response == nil {
		// No initial response (IMAP without SASL-IR): ask for it. A nil
		// challenge becomes "+ " in go-imap and "334 " in go-smtp; an empty
		// non-nil one would become "+ =", which clients read as a challenge.
		return nil, false, nil
	}
	s.done = true
	if user, token, err := ParseXOAUTH2(response); err != nil {
		s.failed = GmailRejection()
	} else {
		s.failed = s.authenticate(user, token)
	}
	if s.failed != nil {
		return encode(s.failed), false, nil
	}
	return nil, true, nil
}
