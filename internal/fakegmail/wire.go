package fakegmail

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/internal/imapline"
)

// wireListener wraps every accepted connection in a wireConn.
type wireListener struct {
	net.Listener
	srv *Server
}

func (l wireListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	wc := &wireConn{
		Conn:  c,
		srv:   l.srv,
		token: fmt.Sprintf("fg%dmb", l.srv.connSeq.Add(1)),
	}
	// A line longer than imapline.MaxLine passes unexamined; imapserver
	// rejects lines over 50 KiB anyway.
	wc.in = &imapline.Reader{R: c, Rewrite: wc.command}
	return wc, nil
}

// wireConn sits between the socket and imapserver and adds the parts of
// Gmail's protocol surface that go-imap v2.0.0-beta.8's server cannot
// express through its Session interfaces:
//
//   - the ID command (RFC 2971), which imapserver answers with BAD (and, before
//     login, BYE): ID lines are taken out of the client stream and answered
//     here, recording the client's parameters;
//   - "ID" and "LOGINDISABLED" in CAPABILITY lists, which imapserver only
//     builds from its own fixed set;
//   - Gmail's greeting, which carries no CAPABILITY code, so clients must ask;
//   - X-GM-EXT-1's fetch items and search keys (gmwire.go).
//
// Both directions track literals ({n} at the end of a line), so message
// data is never mistaken for commands or capability lists.
type wireConn struct {
	net.Conn
	srv   *Server
	token string // echoed in the greeting, ID and its OK, as Gmail does

	// Read side, touched only by imapserver's reading goroutine: the
	// client's lines, each through rewrite.
	in *imapline.Reader

	// Write side.
	wmu        sync.Mutex
	greeted    bool
	line       []byte // partial response line from imapserver
	outLiteral int64  // response literal bytes still to pass untouched
	queued     []byte // our own responses, held until a line boundary

	idMu  sync.Mutex
	email string // set at login
	id    *imap.IDData

	gmMu      sync.Mutex
	selected  string            // the session's selected mailbox
	gmPending map[string]gmWant // tags of FETCHes that asked for Gmail ids
}

func (c *wireConn) Read(p []byte) (int, error) { return c.in.Read(p) }

// command answers ID lines and refused commands itself (dropping them from
// imapserver's stream) and translates Gmail's search and fetch items.
func (c *wireConn) command(line []byte) []byte {
	if c.answerID(line) || c.refuseCommand(line) {
		return nil
	}
	if _, lit := imapline.LiteralLen(line); lit {
		return line
	}
	return c.gmCommand(line)
}

// answerID handles line if it is an ID command, as Gmail does:
//
//	C: a1 ID ("name" "mailgate")
//	S: * ID ("name" "GImap" "vendor" "Google, Inc." ...)
//	S: a1 OK Success <token>
func (c *wireConn) answerID(line []byte) bool {
	if _, lit := imapline.LiteralLen(line); lit {
		return false // ID with a literal argument: left for imapserver to refuse
	}
	s := strings.TrimRight(string(line), "\r\n")
	tag, rest, ok := strings.Cut(s, " ")
	if !ok || tag == "" || strings.ContainsAny(tag, "+*(){%\"\\]") {
		return false
	}
	cmd, args, _ := strings.Cut(rest, " ")
	if !strings.EqualFold(cmd, "ID") {
		return false
	}
	id, err := parseIDParams(args)
	if err != nil {
		c.inject(fmt.Sprintf("%s BAD Invalid arguments. %s\r\n", tag, c.token))
		return true
	}
	c.recordID(id)
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	c.inject(fmt.Sprintf("* ID (\"name\" \"GImap\" \"vendor\" \"Google, Inc.\" "+
		"\"support-url\" \"https://support.google.com/mail\" \"remote-host\" \"%s\" "+
		"\"connection-token\" \"%s\")\r\n%s OK Success %s\r\n", host, c.token, tag, c.token))
	return true
}

func (c *wireConn) recordID(id *imap.IDData) {
	c.idMu.Lock()
	c.id = id
	email := c.email
	c.idMu.Unlock()
	if email != "" && c.srv != nil {
		c.srv.setClientID(email, id)
	}
}

// loggedIn files the ID the client sent before logging in, if any.
func (c *wireConn) loggedIn(email string) {
	c.idMu.Lock()
	c.email = email
	id := c.id
	c.idMu.Unlock()
	if id != nil && c.srv != nil {
		c.srv.setClientID(email, id)
	}
}

func (c *wireConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var out []byte
	for rest := p; len(rest) > 0; {
		if c.outLiteral > 0 {
			n := int(min(int64(len(rest)), c.outLiteral))
			out = append(out, rest[:n]...)
			rest = rest[n:]
			c.outLiteral -= int64(n)
			continue
		}
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			c.line = append(c.line, rest...)
			break
		}
		c.line = append(c.line, rest[:i+1]...)
		rest = rest[i+1:]
		out = append(out, c.rewrite(c.line)...)
		if n, ok := imapline.LiteralLen(c.line); ok {
			c.outLiteral = n
		}
		c.line = c.line[:0]
		if c.outLiteral == 0 && len(c.queued) > 0 {
			out = append(out, c.queued...)
			c.queued = nil
		}
	}
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// inject writes a response of our own between two of imapserver's.
func (c *wireConn) inject(s string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.line) > 0 || c.outLiteral > 0 {
		c.queued = append(c.queued, s...)
		return
	}
	// A failed write surfaces on imapserver's next read or write.
	_, _ = c.Conn.Write([]byte(s))
}

// rewrite turns one complete response line from imapserver into Gmail's.
func (c *wireConn) rewrite(line []byte) []byte {
	if !c.greeted {
		c.greeted = true
		if bytes.HasPrefix(line, []byte("* OK ")) {
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			return fmt.Appendf(nil, "* OK Gimap ready for requests from %s %s\r\n", host, c.token)
		}
	}
	s := string(line)
	if strings.Contains(s, `\`) {
		s = canonicalFlags(s)
		line = []byte(s)
	}
	if rest, ok := strings.CutPrefix(s, "* LIST ("); ok {
		return c.specialUse(rest, line)
	}
	if rest, ok := strings.CutPrefix(s, "* CAPABILITY "); ok {
		caps := strings.TrimRight(rest, "\r\n")
		return []byte("* CAPABILITY " + caps + extraCaps(caps) + "\r\n")
	}
	// "tag OK [CAPABILITY ...] text", i.e. after AUTHENTICATE. Gmail's
	// text is "<email> authenticated (Success)".
	f := strings.SplitN(s, " ", 3)
	if len(f) == 3 && f[1] == "OK" && strings.HasPrefix(f[2], "[CAPABILITY ") {
		if end := strings.IndexByte(f[2], ']'); end > 0 {
			caps := f[2][len("[CAPABILITY "):end]
			text := f[2][end+1:]
			c.idMu.Lock()
			if c.email != "" && strings.Contains(text, "authentication successful") {
				text = " " + c.email + " authenticated (Success)\r\n"
			}
			c.idMu.Unlock()
			return []byte(f[0] + " OK [CAPABILITY " + caps + extraCaps(caps) + "]" + text)
		}
	}
	return c.gmResponse(line)
}

// specialUse adds the RFC 6154 attribute of the mailbox a LIST line names
// (rest is the line after "* LIST ("): the memory backend keeps none, and
// Gmail sends them in every LIST, with RETURN (SPECIAL-USE) or without.
func (c *wireConn) specialUse(rest string, line []byte) []byte {
	c.idMu.Lock()
	email := c.email
	c.idMu.Unlock()
	attrs, after, ok := strings.Cut(rest, ")")
	if !ok || email == "" || c.srv == nil {
		return line
	}
	// after is ` "/" mailbox`: the delimiter, then an atom or a quoted
	// string (literals are not used for the names here).
	f := strings.SplitN(strings.TrimRight(after, "\r\n"), " ", 3)
	if len(f) != 3 {
		return line
	}
	name := f[2]
	if uq, err := strconv.Unquote(name); err == nil && strings.HasPrefix(name, `"`) {
		name = uq
	}
	attr := c.srv.specialUse(email, name)
	if attr == "" {
		return line
	}
	if attrs != "" {
		attrs += " "
	}
	return []byte("* LIST (" + attrs + string(attr) + ")" + after)
}

// systemFlags are the RFC 3501 section 2.3.2 flags in the case Gmail
// writes them.
var systemFlags = []imap.Flag{
	imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged,
	imap.FlagDeleted, imap.FlagDraft, "\\Recent",
}

// canonicalFlags restores the case of system flags in a response line. The
// memory backend lower-cases every flag it stores and sends "\\seen"; Gmail
// sends "\\Seen", and a client comparing flags with == must be tested
// against that. Only whole flag tokens, delimited by "(", ")" or spaces, are
// touched, so quoted text (where a backslash appears doubled) is left alone.
func canonicalFlags(s string) string {
	for _, flag := range systemFlags {
		lower := strings.ToLower(string(flag))
		for from := 0; ; {
			i := strings.Index(s[from:], lower)
			if i < 0 {
				break
			}
			i += from
			end := i + len(lower)
			from = end
			if i == 0 || !strings.ContainsRune("( ", rune(s[i-1])) ||
				end == len(s) || !strings.ContainsRune(") \r", rune(s[end])) {
				continue
			}
			s = s[:i] + string(flag) + s[end:]
		}
	}
	return s
}

// extraCaps is what Gmail advertises that imapserver cannot: ID and
// X-GM-EXT-1 always, and LOGINDISABLED alongside the AUTH= mechanisms
// before login (mailgate's fake accepts OAuth only).
func extraCaps(caps string) string {
	if strings.Contains(" "+caps, " AUTH=") {
		return " ID " + CapGmailExt + " LOGINDISABLED"
	}
	return " ID " + CapGmailExt
}

// parseIDParams parses the argument of ID (RFC 2971 section 3.1):
// NIL or a parenthesised list of string/nstring pairs, quoted strings only.
func parseIDParams(s string) (*imap.IDData, error) {
	s = strings.TrimSpace(s)
	id := &imap.IDData{}
	if strings.EqualFold(s, "NIL") {
		return id, nil
	}
	if len(s) < 2 || s[0] != '(' || s[len(s)-1] != ')' {
		return nil, fmt.Errorf("ID: want NIL or a list")
	}
	s = s[1 : len(s)-1]
	var fields []string
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			break
		}
		var v string
		switch {
		case s[0] == '"':
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("ID: unterminated string")
			}
			v, s = b.String(), s[i+1:]
		case len(s) >= 3 && strings.EqualFold(s[:3], "NIL"):
			v, s = "", s[3:]
		default:
			return nil, fmt.Errorf("ID: want a quoted string or NIL")
		}
		fields = append(fields, v)
	}
	if len(fields)%2 != 0 {
		return nil, fmt.Errorf("ID: odd number of fields")
	}
	field := map[string]*string{
		"name": &id.Name, "version": &id.Version, "os": &id.OS,
		"os-version": &id.OSVersion, "vendor": &id.Vendor,
		"support-url": &id.SupportURL, "address": &id.Address, "date": &id.Date,
		"command": &id.Command, "arguments": &id.Arguments, "environment": &id.Environment,
	}
	for i := 0; i < len(fields); i += 2 {
		if p := field[strings.ToLower(fields[i])]; p != nil {
			*p = fields[i+1]
		}
	}
	return id, nil
}
