package imapline

import (
	"bytes"
	"io"
)

// MaxLine bounds how much of a line a Reader holds while looking for its
// end; a longer one passes through unexamined.
const MaxLine = 64 << 10

// Reader reads IMAP protocol from R and hands each whole line to Rewrite,
// passing on what it returns (nil drops the line). The literals a line
// announces (RFC 3501 section 4.3) pass untouched, so message data is never
// taken for protocol. The fake Gmail rewrites a client's commands with it,
// and mailgate Gmail's answers.
type Reader struct {
	R       io.Reader
	Rewrite func(line []byte) []byte

	buf      [32 << 10]byte
	raw      []byte // bytes not yet examined
	ready    []byte // examined bytes for the caller
	literal  int64  // literal bytes still to pass untouched
	longLine bool   // passing an over-long line through unexamined
}

// Read returns examined bytes. When R fails with bytes ready, they are
// returned first; the next Read returns the error.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.ready) == 0 {
		n, err := r.R.Read(r.buf[:])
		r.raw = append(r.raw, r.buf[:n]...)
		r.scan(err != nil)
		if len(r.ready) == 0 && err != nil {
			return 0, err
		}
	}
	n := copy(p, r.ready)
	r.ready = r.ready[n:]
	if len(r.ready) == 0 {
		r.ready = nil
	}
	return n, nil
}

// scan moves examined bytes from raw to ready.
func (r *Reader) scan(eof bool) {
	for len(r.raw) > 0 {
		if r.literal > 0 {
			n := int(min(int64(len(r.raw)), r.literal))
			r.ready = append(r.ready, r.raw[:n]...)
			r.raw = r.raw[n:]
			r.literal -= int64(n)
			continue
		}
		i := bytes.IndexByte(r.raw, '\n')
		if i < 0 {
			if eof || len(r.raw) > MaxLine {
				r.ready, r.raw = append(r.ready, r.raw...), nil
				r.longLine = !eof
			}
			return
		}
		line := r.raw[:i+1]
		r.raw = r.raw[i+1:]
		if r.longLine {
			r.longLine = false
			r.ready = append(r.ready, line...)
			continue
		}
		if n, ok := LiteralLen(line); ok {
			r.literal = n
		}
		r.ready = append(r.ready, r.Rewrite(line)...)
	}
	r.raw = nil
}
