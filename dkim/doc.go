// Package dkim generates DKIM keys, signs outgoing mail (RFC 6376, RFC 8463),
// and writes and checks the DNS records (DKIM, SPF, DMARC) a mail admin
// publishes.
//
// Only mail that the relay delivers itself (direct to MX or through a
// smarthost) is signed here: Google signs what leaves through Gmail. A
// domain may have an RSA and an Ed25519 key at once; the message then carries
// both signatures, because RFC 8463 section 3 expects receivers that do not
// know Ed25519 yet to ignore that signature and verify the RSA one.
package dkim
