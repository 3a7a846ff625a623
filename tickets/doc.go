// Package tickets turns raw mail into helpdesk tickets stored in Redis.
//
// Its one job: parse an RFC 5322 message (Parse), ingest it idempotently
// (Store.Ingest: a message is a ticket or a comment exactly once), thread
// replies onto the ticket they answer, and publish every change as an event
// on a Redis Stream that helpdesks consume with a consumer group.
package tickets
