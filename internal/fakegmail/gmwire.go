package fakegmail

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-imap/v2"
)

// X-GM-EXT-1 on the wire. imapserver refuses fetch items and search keys
// it does not know, so wireConn translates, as Gmail's extensions page
// describes them:
//
//	C: a1 UID FETCH 5 (X-GM-MSGID X-GM-THRID BODY.PEEK[])
//	   -> a1 UID FETCH 5 (BODY.PEEK[]) to imapserver, whose answer
//	S: * 1 FETCH (UID 5 BODY[] {n} ...
//	   -> * 1 FETCH (UID 5 X-GM-MSGID 1600... X-GM-THRID 1600... BODY[] {n} ...
//
//	C: a2 UID SEARCH X-GM-RAW "rfc822msgid:<x@y> invoice"
//	   -> a2 UID SEARCH HEADER Message-ID "x@y" TEXT "invoice"
//	C: a3 UID SEARCH X-GM-MSGID 1600...   -> a3 UID SEARCH UID 5
//
// The memory backend writes UID first in every FETCH response, before any
// literal, which is where the ids go.

// noUID is a UID no mailbox of the fake reaches: SEARCH X-GM-MSGID for an
// id that is not in the mailbox becomes "UID noUID", which matches nothing.
const noUID = "4294967295"

func (c *wireConn) setSelected(mailbox string) {
	c.gmMu.Lock()
	c.selected = mailbox
	c.gmMu.Unlock()
}

// gmCommand translates a client command line that uses X-GM-EXT-1. It
// returns the line for imapserver, or nil when it answered the command
// itself (BAD for an X-GM-RAW query the fake does not understand).
func (c *wireConn) gmCommand(line []byte) []byte {
	s := strings.TrimRight(string(line), "\r\n")
	if !strings.Contains(strings.ToUpper(s), "X-GM-") {
		return line
	}
	tag, rest, _ := strings.Cut(s, " ")
	cmd, args, _ := strings.Cut(rest, " ")
	prefix := tag + " "
	if strings.EqualFold(cmd, "UID") {
		prefix += cmd + " "
		cmd, args, _ = strings.Cut(args, " ")
	}
	prefix += cmd + " "
	var out string
	var err error
	switch strings.ToUpper(cmd) {
	case "FETCH":
		out = c.gmFetch(tag, !strings.EqualFold(prefix, tag+" FETCH "), args)
	case "SEARCH":
		out, err = c.gmSearch(args)
	default:
		return line
	}
	if err != nil {
		c.inject(fmt.Sprintf("%s BAD %s %s\r\n", tag, err, c.token))
		return nil
	}
	return []byte(prefix + out + "\r\n")
}

// gmFetch takes X-GM-MSGID and X-GM-THRID out of a FETCH's items, asks
// for UID instead (the ids are looked up by it) and notes that the answers
// to tag want them.
func (c *wireConn) gmFetch(tag string, byUID bool, args string) string {
	set, items, _ := strings.Cut(args, " ")
	var list, after string
	if strings.HasPrefix(items, "(") {
		end := matchParen(items)
		if end < 0 {
			return args
		}
		list, after = items[1:end], items[end+1:]
	} else {
		list, after, _ = strings.Cut(items, " ")
		if after != "" {
			after = " " + after
		}
	}
	var kept []string
	var want gmWant
	hasUID := byUID
	for _, item := range strings.Fields(list) {
		switch strings.ToUpper(item) {
		case "X-GM-MSGID":
			want.msgID = true
		case "X-GM-THRID":
			want.thrID = true
		case "UID":
			hasUID = true
			kept = append(kept, item)
		default:
			kept = append(kept, item)
		}
	}
	if want == (gmWant{}) {
		return args
	}
	if !hasUID {
		kept = append([]string{"UID"}, kept...)
	}
	c.gmMu.Lock()
	if c.gmPending == nil {
		c.gmPending = make(map[string]gmWant)
	}
	c.gmPending[tag] = want
	c.gmMu.Unlock()
	return set + " (" + strings.Join(kept, " ") + ")" + after
}

// gmWant is which Gmail ids a FETCH asked for.
type gmWant struct{ msgID, thrID bool }

// gmResponse adds the ids to a FETCH response line, and ends a FETCH's
// want at its tagged response. Commands are answered in order, but a
// client may send the next before the last is answered; the ids go to
// every FETCH response while any X-GM FETCH is outstanding, which Gmail's
// answers to a plain FETCH may carry too.
func (c *wireConn) gmResponse(line []byte) []byte {
	c.gmMu.Lock()
	defer c.gmMu.Unlock()
	if len(c.gmPending) == 0 {
		return line
	}
	s := string(line)
	tag, rest, _ := strings.Cut(s, " ")
	if tag != "*" {
		delete(c.gmPending, tag)
		return line
	}
	num, rest, _ := strings.Cut(rest, " ")
	rest, ok := strings.CutPrefix(rest, "FETCH (UID ")
	if _, err := strconv.ParseUint(num, 10, 32); err != nil || !ok {
		return line
	}
	digits := len(rest) - len(strings.TrimLeft(rest, "0123456789"))
	uid, err := strconv.ParseUint(rest[:digits], 10, 32)
	if err != nil {
		return line
	}
	ids, found := c.srv.lookupIDs(c.loginEmail(), c.selected, imap.UID(uid))
	if !found {
		return line
	}
	var want gmWant
	for _, w := range c.gmPending {
		want.msgID = want.msgID || w.msgID
		want.thrID = want.thrID || w.thrID
	}
	var add string
	if want.msgID {
		add += fmt.Sprintf(" X-GM-MSGID %d", ids.msgID)
	}
	if want.thrID {
		add += fmt.Sprintf(" X-GM-THRID %d", ids.thrID)
	}
	head := len(s) - len(rest) + digits
	return []byte(s[:head] + add + s[head:])
}

func (c *wireConn) loginEmail() string {
	c.idMu.Lock()
	defer c.idMu.Unlock()
	return c.email
}

// gmSearch rewrites the X-GM-RAW, X-GM-MSGID and X-GM-THRID keys of a
// SEARCH into keys imapserver knows.
func (c *wireConn) gmSearch(args string) (string, error) {
	toks, err := searchTokens(args)
	if err != nil {
		return "", err
	}
	var out []string
	for i := 0; i < len(toks); i++ {
		key := strings.ToUpper(toks[i])
		if key != "X-GM-RAW" && key != "X-GM-MSGID" && key != "X-GM-THRID" {
			out = append(out, toks[i])
			continue
		}
		if i+1 == len(toks) {
			return "", fmt.Errorf("%s needs an argument", key)
		}
		i++
		arg := unquote(toks[i])
		if key == "X-GM-RAW" {
			keys, err := gmRaw(arg)
			if err != nil {
				return "", err
			}
			out = append(out, keys)
			continue
		}
		id, err := strconv.ParseUint(arg, 10, 64)
		if err != nil {
			return "", fmt.Errorf("%s wants a number", key)
		}
		c.gmMu.Lock()
		mailbox := c.selected
		c.gmMu.Unlock()
		var set imap.UIDSet
		set.AddNum(c.srv.uidsWith(c.loginEmail(), mailbox, id, key == "X-GM-THRID")...)
		if len(set) == 0 {
			out = append(out, "UID "+noUID)
		} else {
			out = append(out, "UID "+set.String())
		}
	}
	return strings.Join(out, " "), nil
}

// gmRaw turns the part of Gmail's search syntax the fake knows into IMAP
// search keys: rfc822msgid:, from:, to:, cc:, subject: and free words or
// "quoted phrases" (all must match). Anything else (other operators, OR,
// -negation, grouping) is refused: Gmail would answer, so a test relying on
// it must not pass by accident.
func gmRaw(query string) (string, error) {
	terms, err := searchTokens(query)
	if err != nil || len(terms) == 0 {
		return "", fmt.Errorf("X-GM-RAW: empty or unreadable query")
	}
	ops := map[string]string{"from": "FROM", "to": "TO", "cc": "CC", "subject": "SUBJECT"}
	var keys []string
	for _, term := range terms {
		if strings.HasPrefix(term, `"`) {
			keys = append(keys, "TEXT "+quote(unquote(term)))
			continue
		}
		if term == "OR" || term == "AND" || strings.ContainsAny(term[:1], "-({") || strings.ContainsAny(term, ")}") {
			return "", fmt.Errorf("X-GM-RAW: the fake Gmail does not understand %q", term)
		}
		op, val, hasOp := strings.Cut(term, ":")
		switch {
		case !hasOp:
			keys = append(keys, "TEXT "+quote(term))
		case strings.EqualFold(op, "rfc822msgid"):
			keys = append(keys, "HEADER Message-ID "+quote(strings.Trim(unquote(val), "<>")))
		case ops[strings.ToLower(op)] != "":
			keys = append(keys, ops[strings.ToLower(op)]+" "+quote(unquote(val)))
		default:
			return "", fmt.Errorf("X-GM-RAW: the fake Gmail does not understand %q", op+":")
		}
	}
	return strings.Join(keys, " "), nil
}

// searchTokens splits s at spaces outside quoted strings; quoted strings
// keep their quotes.
func searchTokens(s string) ([]string, error) {
	var toks []string
	for s = strings.TrimLeft(s, " "); s != ""; s = strings.TrimLeft(s, " ") {
		i, quoted := 0, false
		for ; i < len(s) && (quoted || s[i] != ' '); i++ {
			switch {
			case s[i] == '\\' && quoted:
				i++
			case s[i] == '"':
				quoted = !quoted
			}
		}
		if quoted || i > len(s) {
			return nil, fmt.Errorf("unterminated quoted string")
		}
		toks = append(toks, s[:i])
		s = s[i:]
	}
	return toks, nil
}

// unquote undoes an IMAP quoted string (RFC 3501 section 4.3); an atom
// comes back as it is.
func unquote(s string) string {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		if s[i] == '\\' && i+1 < len(s)-1 {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// matchParen returns the index of the ")" closing the "(" at s[0], or -1.
func matchParen(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}
