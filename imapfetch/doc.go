// Package imapfetch turns Gmail mailboxes into tickets: one worker per
// connected account logs in over IMAP with XOAUTH2, waits for mail (IDLE,
// or polling), fetches it, hands it to the ticket store, and only then
// marks it \Seen.
//
// # What is fetched
//
// New mail is every message that is UNSEEN and has a UID above the
// account's cursor (accounts.Cursor.LastUID, "highest UID fully
// processed"; read mail above it counts as processed, it is not ours).
// Messages are read with BODY.PEEK[], which never sets \Seen; \Seen is
// stored with UID STORE +FLAGS.SILENT only for the mails the store's answer
// says are stored. A crash in between leaves the mail unseen, so it is
// fetched again, and the store's Message-ID dedupe turns the second ingest
// into a no-op: no mail lost, no duplicate ticket.
//
// The cursor only moves over UIDs that are done (ingested, quarantined, or
// gone). A mail whose ingest failed keeps the cursor just below it, so the
// next poll searches from there again; the mails above it that succeeded
// are \Seen by then and do not match UNSEEN, so only the failed one (and
// new mail) is fetched again.
//
// # Batches
//
// Mail is fetched Options.BatchSize messages per UID FETCH, at most 16 MB
// of mail per batch by the sizes two UID SEARCH LARGER report, and each
// batch goes to the store in one IngestBatch call, which answers for each
// mail.
// The batches overlap: while one batch is stored, the next is fetched
// (its answer streamed into buffers of the announced literal size) and
// parsed on GOMAXPROCS goroutines, and the \Seen of the batch before is
// answered; at most two batches of mail are held at once. The cursor moves
// once the server has answered the \Seen. Shutdown finishes the batch being
// stored and its \Seen; the batch fetched ahead of it is dropped, still
// unseen.
//
// # Initial import
//
// On an account's first session (Account.ImportDone false) the mails that
// arrived before the account was connected (INTERNALDATE before
// Account.ConnectedAt) are "existing mail". With ImportRecent N > 0 the N
// highest UIDs among them, read or unread, are ingested with
// SuppressTriggers (no auto-replies to old mail) and the tag "imported".
// Their flags are left as they were: it is old mail the admin may already have handled in Gmail,
// and marking 50 messages read behind a user's back is surprising. With
// ImportRecent 0 none is. Either way the cursor then starts after the
// existing mail and MarkImportDone records it; an import that is cut short
// runs again from the start (dedupe makes that harmless).
//
// Splitting by ConnectedAt rather than "whatever is there at the first
// session" means mail that arrives after `accounts connect` but before the
// daemon first logs in is still new mail. INTERNALDATE has whole seconds
// and comes from Gmail's clock: a mail from the very second of the connect
// counts as new, and clock skew between this host and Google moves the line
// by that much.
//
// # Poison mail
//
// A mail that the store fails (or that makes the parser or the store panic;
// a batch that panics is retried mail by mail to find the one that does)
// is counted with accounts.Attempt, per folder (INBOX and Sent may share a
// UIDVALIDITY); at Options.MaxAttempts it is handed to the ticket store's Quarantine with
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
// When the server offers X-GM-EXT-1 (Gmail), each mail is fetched with
// its X-GM-MSGID and X-GM-THRID, which go-imap's client cannot ask for or
// read: gmConn (gmext.go) carries them under the client as header
// sections. They go to the store with the mail: X-GM-MSGID names a mail
// without Message-ID in its account (tickets' dedupe key), X-GM-THRID is
// the Gmail conversation (tickets' gmail-thread rule). Without the
// extension (Dovecot), or over STARTTLS (where imapclient owns the TLS
// layer), mail is fetched as before.
//
// # The Sent folder
//
// With Options.SentFolder each poll first reads the Sent folder (sent.go):
// found by its \Sent attribute, opened with EXAMINE, searched above a
// cursor of its own (accounts.SentCursor, which starts at the folder's
// UIDNEXT the first time), and fetched and stored by the same batches as
// INBOX, as tickets.Source.Agent; nothing there is marked. INBOX is then
// selected again, so mail that reached it meanwhile is found by the search
// that follows.
//
// # Several processes
//
// A worker polls an account only while it holds the account's lease in
// Redis (accounts.AcquireLease, renewed every LeaseTTL/3). The lease names
// its owner (host:pid:token), so a worker goes on with its own lease after
// a reconnect or a Redis restart, and takes over at once one whose holder
// was a process on this host that is gone; other holders are waited out.
// While Redis does not answer, a worker asks it again every second rather
// than backing off as from a failing IMAP server.
//
// Processes on one Redis split the accounts (share.go): each sends a
// heartbeat every LeaseTTL/3 saying how many leases it holds, takes at
// most accounts / live processes (rounded up), hands the excess over
// (the session finishes the mail in hand, then releases its lease) and,
// below its share while some leases are held by nobody alive, reads its
// waiting workers' leases in one pipelined look and lets those that are
// free try. Standby workers do not poll leases themselves.
//
// # Files
//
// fetcher.go (options, the supervisor, PollOnce), gmext.go (Gmail's ids
// on the wire), worker.go (one account:
// lease, backoff), share.go (the split across processes), lease.go (one
// goroutine renewing every worker's lease, in one pipeline), record.go (the polls that found nothing, recorded
// together), and one file per part of an IMAP session, as go-imap's
// imapclient has one per command: session.go (dial, log in, select, wait
// with IDLE), poll.go (search, the batch pipeline, cursor), batch.go
// (stream and parse one batch), ingest.go (store a batch, \Seen,
// quarantine), sent.go (the Sent folder).
package imapfetch
