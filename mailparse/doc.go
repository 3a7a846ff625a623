// Package mailparse reads one mail: raw RFC 5322/MIME bytes in, a Parsed
// message out (addresses, threading headers, the text and HTML bodies in
// UTF-8, the attachments and inline images).
//
// Parse never fails and never panics. Mail in the wild breaks the
// standards in every way a mailer can, and losing a customer's mail is
// worse than reading it imperfectly: what cannot be parsed is listed in
// Parsed.Problems, and the fields are filled as well as the input allows.
// The MIME work is done by maintained libraries (go-message, net/mail,
// mime, x/net/html, x/text); the hand-written fallbacks in lenient.go run
// only where those give up on real mail, and lenient_test.go shows each
// library failing on the case its fallback exists for.
//
// Parts is the cheap mode: it walks the MIME structure and describes each
// attachment and inline part without decoding them, for a caller that
// only needs to know what a mail carries.
package mailparse
