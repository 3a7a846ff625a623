// This file reads a message's header once for everything the relay asks
// of it: the checks at the end of DATA, prepare, and each delivery try.

package smtprelay

import (
	"bufio"
	"bytes"
	"strings"

	"github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// header is what the end of DATA (its checks and prepare) and each try
// need from a message's header, read once: parsing is a large part of
// what accepting a message costs.
type header struct {
	h       textproto.Header
	ok      bool     // h was read
	from    string   // lower-cased first address of the From field, "" if none
	authors []string // every address of the From field, lower-cased; none if it cannot be read
	body    int      // where the body starts in the bytes h was read from
}

// readHeader reads the header of data; ok is false when it cannot be read.
func readHeader(data []byte) header {
	src := bytes.NewReader(data)
	br := bufio.NewReader(src)
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return header{}
	}
	// What the reader took from data and did not hand to ReadHeader is
	// the start of the body.
	hd := header{h: h, ok: true, body: len(data) - src.Len() - br.Buffered()}
	list, err := (&gomail.Header{Header: message.Header{Header: h}}).AddressList("From")
	if err == nil && len(list) > 0 {
		hd.authors = make([]string, len(list))
		for i, a := range list {
			hd.authors[i] = strings.ToLower(a.Address)
		}
		hd.from = hd.authors[0]
	}
	return hd
}
