package fakesmtp

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// errDropped is returned from Data after DropNext closed the connection;
// go-smtp's attempt to write a reply for it fails on the closed connection.
var errDropped = errors.New("fakesmtp: connection dropped")

// session is one go-smtp Session: from an EHLO to STARTTLS or the end of the
// connection. The server's state is behind s.mu; the fields here are used
// only by the connection's goroutine.
type session struct {
	s    *Server
	c    *smtp.Conn
	conv *conversation
	tls  bool

	authUser string
	from     string
	to       []string
	utf8     bool // MAIL FROM said SMTPUTF8

	// hangUp is set when a 421 was sent at the end of DATA: Reset, which
	// go-smtp calls right after writing that reply, closes the connection.
	hangUp bool
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

func (ss *session) gmail() bool { return ss.s.kind == kindGmail }

// logf appends a line to the connection's transcript.
func (ss *session) logf(format string, args ...any) {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	ss.conv.lines = append(ss.conv.lines, fmt.Sprintf(format, args...))
}

// gmailID returns the next "<connection token>.<n>" Gmail puts in replies.
func (ss *session) gmailID() string {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	ss.conv.replies++
	return fmt.Sprintf("%s.%d", ss.conv.token, ss.conv.replies)
}

// reply turns e into what go-smtp must be given to put it on the wire as
// Gmail (or the MX) would, logs the lines, and arranges for a 421 to close
// the connection.
//
// go-smtp writes the enhanced code only on the last line of a multi-line
// reply; RFC 2034 section 3 wants it on every line, as Gmail sends it, and
// go-smtp's client strips it from each line. So the code is added to the
// other lines here, and a client gets e.Message back (plus Gmail's tail).
func (ss *session) reply(e *smtp.SMTPError) *smtp.SMTPError {
	lines := strings.Split(e.Message, "\n")
	if ss.gmail() && e.Code >= 400 {
		lines[len(lines)-1] += " " + ss.gmailID() + " - gsmtp"
	}
	ec := e.EnhancedCode
	if ec == smtp.EnhancedCodeNotSet {
		if class := e.Code / 100; class == 2 || class == 4 || class == 5 {
			ec = smtp.EnhancedCode{class, 0, 0}
		} else {
			ec = smtp.NoEnhancedCode
		}
	}
	prefix := ""
	if ec != smtp.NoEnhancedCode {
		prefix = fmt.Sprintf("%d.%d.%d ", ec[0], ec[1], ec[2])
	}
	for i := range len(lines) - 1 {
		lines[i] = prefix + lines[i]
	}

	ss.s.mu.Lock()
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
			l = prefix + l
		}
		ss.conv.lines = append(ss.conv.lines, fmt.Sprintf("S: %d%s%s", e.Code, sep, l))
	}
	ss.s.mu.Unlock()

	if e.Code == 421 {
		ss.hangUp = true
		// At MAIL or RCPT no session method runs after go-smtp writes
		// the reply; an expired read deadline ends its next read, and
		// go-smtp then closes the connection (after an extra
		// "421 4.4.2 Idle timeout" line).
		ss.c.Conn().SetReadDeadline(time.Now())
	}
	return &smtp.SMTPError{Code: e.Code, EnhancedCode: e.EnhancedCode, Message: strings.Join(lines, "\n")}
}

func (ss *session) Reset() {
	ss.from, ss.to = "", nil
	if ss.hangUp {
		// Called by go-smtp right after the DATA reply is flushed. Its
		// lock is held, so close the net.Conn, not the smtp.Conn.
		ss.c.Conn().Close()
	}
}

func (ss *session) Logout() error { return nil }

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	ss.logf("C: MAIL FROM:<%s>", from)
	switch {
	case ss.gmail() && !ss.tls:
		return ss.reply(ErrMustStartTLS)
	case ss.gmail() && ss.authUser == "":
		return ss.reply(ErrAuthRequired)
	case !ss.gmail() && len(ss.s.users) > 0 && ss.authUser == "":
		return ss.reply(errMXAuthRequired)
	}
	ss.from = from
	ss.utf8 = opts != nil && opts.UTF8
	ss.logf("S: 250 2.0.0 Roger, accepting mail from <%s>", from)
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.logf("C: RCPT TO:<%s>", to)
	ss.s.mu.Lock()
	injected := ss.s.failRcpt[strings.ToLower(to)]
	ss.s.mu.Unlock()
	if injected != nil {
		return ss.reply(injected)
	}
	if ss.gmail() {
		if len(ss.to) >= gmailMaxRecipients {
			return ss.reply(ErrTooManyRecipients)
		}
	} else if len(ss.s.domains) > 0 {
		_, domain, _ := strings.Cut(to, "@")
		if !ss.s.domains[strings.ToLower(domain)] {
			return ss.reply(ErrNoSuchUser)
		}
	}
	ss.to = append(ss.to, to)
	ss.logf("S: 250 2.0.0 I'll make sure <%s> gets this", to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	ss.logf("C: DATA")
	ss.logf("S: 354 Go ahead. End your data with <CR><LF>.<CR><LF>")
	ss.logf("C: (%d bytes)", len(data))
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) { // e.g. smtp.ErrDataTooLarge
			return ss.reply(se)
		}
		return err
	}

	s := ss.s
	var injected *smtp.SMTPError
	drop := false
	s.mu.Lock()
	switch {
	case ss.gmail() && s.overLimit[strings.ToLower(ss.authUser)]:
		injected = ErrDailyLimit
	case s.drops > 0:
		s.drops--
		drop = true
	case len(s.failData) > 0:
		injected = s.failData[0]
		s.failData = s.failData[1:]
	}
	s.mu.Unlock()

	if drop {
		ss.logf("S: (connection dropped)")
		ss.c.Conn().Close()
		return errDropped
	}
	if injected != nil {
		return ss.reply(injected)
	}

	m := Message{
		From:     ss.from,
		To:       slices.Clone(ss.to),
		Data:     data,
		AuthUser: ss.authUser,
		TLS:      ss.tls,
		Helo:     ss.c.Hostname(),
		UTF8:     ss.utf8,
		At:       time.Now(),
	}
	// go-smtp sends a plain nil as "250 2.0.0 OK: queued"; an SMTPError
	// with code 250 is written as given, which lets the reply carry the
	// id the way real servers do.
	var ok *smtp.SMTPError
	if ss.gmail() {
		m.ID = ss.gmailID()
		m.Data, m.FromRewritten = ss.gmailFrom(data)
		ok = &smtp.SMTPError{
			Code:         250,
			EnhancedCode: smtp.EnhancedCode{2, 0, 0},
			Message:      fmt.Sprintf("OK  %d %s - gsmtp", m.At.Unix(), m.ID),
		}
	} else {
		s.mu.Lock()
		s.nextQueue++
		m.ID = fmt.Sprintf("%s%04X", strings.ToUpper(ss.conv.token[:6]), s.nextQueue)
		s.mu.Unlock()
		ok = &smtp.SMTPError{
			Code:         250,
			EnhancedCode: smtp.EnhancedCode{2, 0, 0},
			Message:      "Ok: queued as " + m.ID,
		}
	}
	s.record(m)
	if ss.gmail() && s.sent != nil {
		s.sent(ss.authUser, slices.Clone(data))
	}
	ss.logf("S: 250 2.0.0 %s", ok.Message)
	return ok
}

// gmailFrom does what Gmail does to the From header of data: a From that
// is neither the authenticated account nor one of its "Send mail as"
// aliases is replaced by the account's address (its display name kept), so
// a client can never send in another's name. It returns the bytes as Gmail
// delivers them and whether it rewrote the From.
func (ss *session) gmailFrom(data []byte) ([]byte, bool) {
	acct := strings.ToLower(ss.authUser)
	br := bufio.NewReader(bytes.NewReader(data))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return data, true
	}
	mh := gomail.Header{Header: message.Header{Header: h}}
	name := ""
	if list, err := mh.AddressList("From"); err == nil && len(list) == 1 {
		addr := strings.ToLower(list[0].Address)
		ss.s.mu.Lock()
		alias := slices.Contains(ss.s.aliases[acct], addr)
		ss.s.mu.Unlock()
		if addr == acct || alias {
			return data, false
		}
		name = list[0].Name
	}
	mh.SetAddressList("From", []*gomail.Address{{Name: name, Address: acct}})
	var out bytes.Buffer
	textproto.WriteHeader(&out, mh.Header.Header)
	out.ReadFrom(br)
	return out.Bytes(), true
}

func (ss *session) AuthMechanisms() []string {
	if ss.gmail() {
		if !ss.tls {
			return nil
		}
		return gmailMechanisms
	}
	if len(ss.s.users) == 0 || (ss.s.tlsOn && !ss.tls) {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	mech = strings.ToUpper(mech)
	fail := func(e *smtp.SMTPError) (sasl.Server, error) {
		ss.logf("C: AUTH %s", mech)
		return nil, ss.reply(e)
	}
	if ss.authUser != "" {
		// go-smtp's own check never fires: the 235 is sent as an
		// error, so go-smtp does not know the session authenticated.
		return fail(errAlreadyAuthenticated)
	}
	if ss.gmail() {
		if !ss.tls {
			return fail(ErrMustStartTLS)
		}
		switch mech {
		case "XOAUTH2":
			return newXOAUTH2Exchange(ss), nil
		case sasl.OAuthBearer:
			return newOAuthBearerExchange(ss), nil
		case sasl.Plain, sasl.Login:
			// No app passwords here: like an account with them
			// disabled, every password is wrong.
			return newPasswordExchange(ss, mech, func(string, string) bool { return false }), nil
		}
		return fail(ErrUnrecognizedAuth)
	}
	if len(ss.s.users) == 0 {
		return fail(smtp.ErrAuthUnsupported)
	}
	if ss.s.tlsOn && !ss.tls {
		return fail(ErrMustStartTLS)
	}
	switch mech {
	case sasl.Plain, sasl.Login:
		return newPasswordExchange(ss, mech, func(user, pass string) bool {
			want, ok := ss.s.users[user]
			return ok && want == pass
		}), nil
	}
	return fail(smtp.ErrAuthUnknownMechanism)
}

func randomToken() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}
