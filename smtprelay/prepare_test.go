package smtprelay

import "time"

// prepare is prepareRead for tests that start from a message's bytes.
func prepare(data []byte, from string, to []string, hostname string, now time.Time, tr *trace) *Message {
	return prepareRead(data, readHeader(data), from, to, hostname, now, tr)
}
