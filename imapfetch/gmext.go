// This file fetches Gmail's X-GM-MSGID and X-GM-THRID (X-GM-EXT-1) with
// each mail. go-imap's client can neither ask for these fetch items nor
// read them (it drops the connection on an unknown item, and its author
// declines Gmail-only extensions), so gmConn, under the client, carries
// them as header sections go-imap does handle:
//
//	client: UID FETCH 5 (UID BODY.PEEK[HEADER.FIELDS ("X-GM-MSGID")] ...)
//	wire:   UID FETCH 5 (UID X-GM-MSGID ...)
//	wire:   * 1 FETCH (X-GM-MSGID 1278455344230334865 UID 5 ...
//	client: * 1 FETCH (UID 5 BODY[HEADER.FIELDS ("X-GM-MSGID")] {33}
//	        X-GM-MSGID: 1278455344230334865
//
// The sections go right after UID: go-imap matches a UID FETCH answer to
// its command by the UID it has read when the first literal starts.

package imapfetch

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"sync"

	"github.com/emersion/go-imap/v2"

	"github.com/mailgate/mailgate/internal/imapline"
)

// capGmailExt is the capability of Gmail's IMAP extensions.
const capGmailExt imap.Cap = "X-GM-EXT-1"

// The header sections that stand for the Gmail items on the client's side.
var (
	gmMsgIDSection = &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"X-GM-MSGID"}}
	gmThrIDSection = &imap.FetchItemBodySection{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"X-GM-THRID"}}
)

// gmFetchOptions is fetchOptions plus the Gmail ids.
var gmFetchOptions = &imap.FetchOptions{
	UID:          true,
	InternalDate: true,
	BodySection:  []*imap.FetchItemBodySection{bodyPeek, gmMsgIDSection, gmThrIDSection},
}

// What go-imap writes for the two sections, and what Gmail wants instead.
var gmCommandItems = [][2][]byte{
	{[]byte(`BODY.PEEK[HEADER.FIELDS ("X-GM-MSGID")]`), []byte("X-GM-MSGID")},
	{[]byte(`BODY.PEEK[HEADER.FIELDS ("X-GM-THRID")]`), []byte("X-GM-THRID")},
}

var (
	gmItemRE = regexp.MustCompile(`(?i) ?\bX-GM-(MSGID|THRID) (\d+)`)
	uidRE    = regexp.MustCompile(`(?i)[( ]UID \d+`)
)

// gmConn translates the Gmail items between go-imap's client and the
// server, as the file comment shows. It works line by line in both
// directions and passes literals (message bodies) through untouched.
type gmConn struct {
	net.Conn

	// Read side, used by the client's reading goroutine only.
	r *imapline.Reader
	// inFetch: the line after the current literal continues a FETCH
	// response, whose Gmail items may also come after a literal.
	inFetch bool

	// Write side.
	wmu  sync.Mutex
	line []byte // a command line not yet complete
}

func (c *gmConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// Commands are rewritten whole lines at a time, so a fetch item split
	// across two writes is still found. The client never waits for an
	// answer in the middle of a line: a synchronising literal's "{n}" ends
	// its line.
	c.line = append(c.line, p...)
	end := bytes.LastIndexByte(c.line, '\n')
	if end < 0 {
		return len(p), nil
	}
	out := c.line[:end+1]
	for _, item := range gmCommandItems {
		out = bytes.ReplaceAll(out, item[0], item[1])
	}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	c.line = append(c.line[:0], c.line[end+1:]...)
	return len(p), nil
}

func (c *gmConn) Read(p []byte) (int, error) {
	if c.r == nil {
		c.r = &imapline.Reader{R: c.Conn, Rewrite: c.rewrite}
	}
	return c.r.Read(p)
}

// rewrite translates the Gmail items of one server line.
func (c *gmConn) rewrite(line []byte) []byte {
	cont := c.inFetch
	_, lit := imapline.LiteralLen(line)
	c.inFetch = lit && (cont || isFetchResponse(line))
	if cont {
		return gmContinuation(line)
	}
	return gmResponseLine(line)
}

// gmResponseLine turns the Gmail items of a response line into header
// sections, placed right after the UID when the line has one.
func gmResponseLine(line []byte) []byte {
	if !isFetchResponse(line) {
		return line
	}
	items := gmItemRE.FindAllSubmatch(line, -1)
	if items == nil {
		return line
	}
	sections := gmSections(items)
	// "(X-GM-MSGID 1 UID 5" becomes "( UID 5", tidied below.
	rest := gmItemRE.ReplaceAll(line, nil)
	at := bytes.Index(rest, []byte("FETCH (")) + len("FETCH (")
	if loc := uidRE.FindIndex(rest); loc != nil {
		at = loc[1]
	} else if at < len("FETCH (") {
		return line
	}
	out := append([]byte{}, rest[:at]...)
	out = append(out, sections...)
	out = append(out, rest[at:]...)
	return bytes.Replace(out, []byte("FETCH ( "), []byte("FETCH ("), 1)
}

// gmContinuation translates the Gmail items of a FETCH response's line
// that follows a literal ("... BODY[] {n}\r\n<n bytes> X-GM-MSGID 1)"):
// RFC 3501 section 7.4.2 lets a server order a message's items as it
// likes, so they may come after the body. Their sections go first on the
// line, right after the literal; the UID, read before it, already tied the
// response to its command.
func gmContinuation(line []byte) []byte {
	items := gmItemRE.FindAllSubmatch(line, -1)
	if items == nil {
		return line
	}
	return append(gmSections(items), gmItemRE.ReplaceAll(line, nil)...)
}

// gmSections writes Gmail items as the header sections go-imap reads.
func gmSections(items [][][]byte) []byte {
	var sections []byte
	for _, m := range items {
		hdr := fmt.Sprintf("X-GM-%s: %s\r\n\r\n", bytes.ToUpper(m[1]), m[2])
		sections = fmt.Appendf(sections, " BODY[HEADER.FIELDS (\"X-GM-%s\")] {%d}\r\n%s", bytes.ToUpper(m[1]), len(hdr), hdr)
	}
	return sections
}

// isFetchResponse reports whether line starts an untagged FETCH response.
func isFetchResponse(line []byte) bool {
	return bytes.HasPrefix(line, []byte("* ")) && bytes.Contains(line, []byte(" FETCH ("))
}

// gmIDs reports whether FETCH asks for the Gmail ids: the server offers
// them and gmConn is there to carry them.
func (s *session) gmIDs() bool {
	return s.gmWire && s.caps.Has(capGmailExt)
}

// gmID reads the number of a Gmail item's header section; 0 if absent.
func gmID(section []byte) uint64 {
	_, v, ok := bytes.Cut(section, []byte(":"))
	if !ok {
		return 0
	}
	id, _ := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
	return id
}
