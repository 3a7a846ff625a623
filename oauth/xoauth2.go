package oauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-sasl"
)

// XOAUTH2 is the SASL mechanism name Gmail documents for IMAP and SMTP.
const XOAUTH2 = "XOAUTH2"

// XOAUTH2Error is the JSON a server sends as its one challenge when it
// rejects a token, e.g. {"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}.
// OAUTHBEARER (RFC 7628 section 3.2.2) uses the same three fields, so the
// clients of both mechanisms report it with this type.
type XOAUTH2Error struct {
	Status  string `json:"status"`
	Schemes string `json:"schemes,omitempty"`
	Scope   string `json:"scope,omitempty"`
}

func (e *XOAUTH2Error) Error() string {
	var b strings.Builder
	b.WriteString("oauth: server rejected the access token")
	if e.Status != "" {
		fmt.Fprintf(&b, " (status %s", e.Status)
		if e.Scope != "" {
			fmt.Fprintf(&b, ", scope %s", e.Scope)
		}
		b.WriteString(")")
	}
	return b.String()
}

// XOAUTH2Client is a go-sasl client for Google's XOAUTH2 mechanism
// (https://developers.google.com/gmail/imap/xoauth2-protocol). Use one per
// authentication attempt; it is not safe for concurrent use.
type XOAUTH2Client struct {
	user, token string
	errorChallenge
}

var _ sasl.Client = (*XOAUTH2Client)(nil)

// NewXOAUTH2Client returns a client that authenticates user (the full email
// address) with an OAuth2 access token.
func NewXOAUTH2Client(user, token string) *XOAUTH2Client {
	return &XOAUTH2Client{user: user, token: token}
}

// Start returns the initial response "user=<email>^Aauth=Bearer <token>^A^A".
// go-imap and go-smtp base64-encode it on the wire.
func (c *XOAUTH2Client) Start() (mech string, ir []byte, err error) {
	// A ^A inside either field would let it forge the other one.
	if strings.ContainsAny(c.user, "\x01") || strings.ContainsAny(c.token, "\x01") {
		return "", nil, errors.New("oauth: XOAUTH2 user or token contains a control-A byte")
	}
	return XOAUTH2, []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

// Next answers the server's only possible challenge: on failure Gmail sends a
// base64 JSON error (decoded by go-imap/go-smtp before it reaches us) and
// expects an empty response, after which it sends the final NO / 535.
//
// The response must be a non-nil empty slice: go-smtp reads a nil response as
// "authentication finished" and would report success without waiting for the
// server's verdict; go-imap sends "=" for it, go-smtp an empty line.
func (c *XOAUTH2Client) Next(challenge []byte) ([]byte, error) {
	if err := c.record(challenge); err != nil {
		return nil, err
	}
	return []byte{}, nil
}

// errorChallenge is what the XOAUTH2 and OAUTHBEARER clients share: the
// one challenge either mechanism allows is the server's error.
type errorChallenge struct {
	challenged bool
	lastErr    *XOAUTH2Error
}

// record decodes the error challenge. A challenge that is not the
// documented JSON still means failure, so it yields an empty XOAUTH2Error
// rather than nil; a second challenge is a protocol error.
func (c *errorChallenge) record(challenge []byte) error {
	if c.challenged {
		return sasl.ErrUnexpectedServerChallenge
	}
	c.challenged = true
	var e XOAUTH2Error
	if json.Unmarshal(challenge, &e) != nil {
		e = XOAUTH2Error{}
	}
	c.lastErr = &e
	return nil
}

// LastError returns the error the server described in its challenge, or nil
// if there was none. Callers attach it to the error Authenticate/Auth return
// (see Explain): the final NO / 535 line alone does not say why.
func (c *errorChallenge) LastError() *XOAUTH2Error { return c.lastErr }

// oauthBearerClient wraps go-sasl's OAUTHBEARER client. go-sasl's Next
// returns the server's error instead of a response; go-imap then abandons the
// command mid-exchange. RFC 7628 section 3.2.3 wants the client to answer the
// error challenge with a single %x01 so the server can finish with NO / 535.
type oauthBearerClient struct {
	sasl.Client
	errorChallenge
}

func (c *oauthBearerClient) Next(challenge []byte) ([]byte, error) {
	if err := c.record(challenge); err != nil {
		return nil, err
	}
	return []byte{0x01}, nil
}

// Mechanism picks the SASL client for a server that advertises serverMechs
// (IMAP "AUTH=" capabilities or the SMTP AUTH list, case-insensitive).
// XOAUTH2 wins when both are offered, as Gmail does; OAUTHBEARER is used only
// when it is the only one; if neither is listed XOAUTH2 is tried anyway, so
// the server, not mailgate, produces the error. The returned client has a
// LastError method; see Explain.
func Mechanism(serverMechs []string, user string, token string) sasl.Client {
	var bearer bool
	for _, m := range serverMechs {
		switch strings.ToUpper(strings.TrimSpace(m)) {
		case XOAUTH2:
			return NewXOAUTH2Client(user, token)
		case sasl.OAuthBearer:
			bearer = true
		}
	}
	if bearer {
		return &oauthBearerClient{Client: sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{
			Username: user,
			Token:    token,
		})}
	}
	return NewXOAUTH2Client(user, token)
}

// Explain adds the server's error challenge, if c (from Mechanism or
// NewXOAUTH2Client) received one, to err, the error the IMAP or SMTP client
// returned. The result wraps both, so errors.As finds *XOAUTH2Error as well as
// the protocol error (*imap.Error, *smtp.SMTPError). A nil err stays nil.
func Explain(c sasl.Client, err error) error {
	if err == nil {
		return nil
	}
	lc, ok := c.(interface{ LastError() *XOAUTH2Error })
	if !ok {
		return err
	}
	if e := lc.LastError(); e != nil {
		return fmt.Errorf("%w: %w", err, e)
	}
	return err
}
