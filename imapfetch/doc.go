// Package imapfetch turns Gmail mailboxes into tickets: one worker per
// connected account logs in over IMAP with XOAUTH2, waits for mail (IDLE,
// or polling), fetches it, hands it to the ticket store, and only then
// marks it \Seen.
//
// # What is fetched
//
// New mail (seed G1–G3, G17) is every message that is UNSEEN and has a UID
// above the account's cursor (accounts.Cursor.LastUID, "highest UID fully
// processed"). Messages are read with BODY.PEEK[], which never sets \Seen;
// \Seen is stored with UID STORE +FLAGS.SILENT only after Ingest returned
// nil. A crash in between leaves the mail unseen, so it is fetched again,
// and Ingest's Message-ID dedupe turns the second ingest into a no-op: no
// mail lost, no duplicate ticket.
//
// The cursor only moves over UIDs that are done (ingested, quarantined, or
// gone). A mail whose ingest failed keeps the cursor just below it, so the
// next poll searches from there again; the mails above it that succeeded
// are \Seen by then and do not match UNSEEN, so only the failed one (and
// new mail) is fetched again.
//
// # Initial import
//
// On an account's first session (Account.ImportDone false) with
// ImportRecent N > 0, the N highest UIDs in INBOX, read or unread, are
// ingested with SuppressTriggers and the tag "imported" (G4, G5). Their
// flags are left as they were: it is old mail the admin may already have
// handled in Gmail, and marking 50 messages read behind a user's back is
// surprising. The cursor then moves to the highest UID that existed when
// the import started, and MarkImportDone records it; an import that is cut
// short runs again from the start (dedupe makes that harmless). With
// ImportRecent 0 the cursor simply starts at the highest existing UID, so
// only mail that arrives later counts. Mail that arrives between the OAuth
// consent and the worker's first session is below that cursor and is not
// fetched (a known gap; the window is normally seconds).
//
// # Poison mail
//
// A mail whose Ingest fails (or panics) is counted with accounts.Attempt;
// at Options.MaxAttempts it is handed to the ticket store's Quarantine with
// its raw bytes and the error, counted with AddQuarantined, and treated as
// done for the cursor. It stays unseen in Gmail, so a human notices it.
// Errors that look like the store being unreachable (network errors,
// timeouts) are not counted against the mail: the session ends and is
// retried with backoff instead, so a Redis outage never quarantines good
// mail.
//
// # UIDVALIDITY
//
// When INBOX's UIDVALIDITY differs from the cursor's, UIDs mean nothing
// any more: the cursor restarts at 0 with a warning, every unseen mail is
// fetched again, and Message-ID dedupe keeps already-ingested mail from
// becoming a second ticket. (Unread mail that was deliberately skipped,
// e.g. with ImportRecent 0, would then become tickets.)
//
// # Gmail extensions
//
// X-GM-EXT-1 (X-GM-MSGID, X-GM-THRID) is not used yet: the in-process
// fake server does not offer it, and UIDVALIDITY plus Message-ID dedupe
// cover what X-GM-MSGID would add.
//
// # Several processes
//
// A worker polls an account only while it holds the account's lease in
// Redis (accounts.AcquireLease, renewed every LeaseTTL/3); the others wait
// and take over when the holder stops or dies.
package imapfetch
