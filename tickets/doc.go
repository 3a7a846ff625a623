// Package tickets turns raw mail into helpdesk tickets stored in Redis.
//
// Its one job: ingest a message that package mailparse has read,
// idempotently (Store.Ingest: a message is a ticket or a comment exactly
// once), thread replies onto the ticket they answer, and publish every
// change as an event on a Redis Stream that helpdesks consume with a
// consumer group.
package tickets
