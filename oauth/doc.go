// Package oauth gets OAuth2 access tokens for Gmail accounts and speaks the
// SASL mechanisms (XOAUTH2, OAUTHBEARER) that IMAP and SMTP use with them.
//
// One file per concern: xoauth2.go (SASL clients), token.go (refreshing
// access tokens), registry.go (one token source per account, shared by IMAP
// and SMTP), secret.go (refresh tokens encrypted at rest), consent.go (the
// interactive "accounts connect" flow). Nothing here logs or returns a token
// in an error string.
package oauth

// GmailScope is the only scope that allows IMAP and SMTP access
// (https://developers.google.com/gmail/imap/xoauth2-protocol). Google's
// endpoints are configuration (package config), passed in by the caller.
const GmailScope = "https://mail.google.com/"
