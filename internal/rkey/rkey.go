// Package rkey decides the Redis key prefix every mailgate store uses, so
// that all of them agree on it under Redis Cluster.
package rkey

import (
	"strings"

	"github.com/redis/go-redis/v9"
)

// Prefix returns the key prefix to use with rdb. Under Redis Cluster a
// prefix without a hash tag becomes one ("mailgate:" → "{mailgate}:"), so
// that every key lands in one slot: scripts and MULTI blocks that touch
// several keys (an ingest, a queue move) are refused with CROSSSLOT
// otherwise. A helpdesk's data is small; atomicity matters more than
// spreading it across shards.
func Prefix(rdb redis.UniversalClient, prefix string) string {
	if prefix == "" {
		prefix = "mailgate:"
	}
	if _, ok := rdb.(*redis.ClusterClient); ok && !strings.Contains(prefix, "{") {
		return "{" + strings.TrimSuffix(prefix, ":") + "}:"
	}
	return prefix
}
