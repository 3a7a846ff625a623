package smtprelay

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Durability says how safe a 250 is with the Redis in use.
type Durability struct {
	// WaitAOF: Put should wait for the append-only file fsync (WAITAOF).
	WaitAOF bool
	// Warning is non-empty when Redis could lose a message the relay has
	// acknowledged; the relay logs it loudly at startup.
	Warning string
}

// CheckDurability reads Redis's persistence settings. A relay promises,
// with its 250, that the message will be delivered or bounced (RFC 5321
// section 4.1.1.4, "the receiver MUST NOT lose the message"); that holds
// only as far as Redis writes the message to disk before we answer.
func CheckDurability(ctx context.Context, rdb redis.UniversalClient) Durability {
	version := redisVersion(ctx, rdb)
	cfg, err := rdb.ConfigGet(ctx, "append*").Result()
	if err != nil {
		return Durability{Warning: fmt.Sprintf("cannot read Redis persistence settings (CONFIG GET: %v): make sure Redis runs with appendonly yes and appendfsync always (or Redis >= 7.2 with everysec), or accepted mail can be lost in a crash", err)}
	}
	aof, fsync := cfg["appendonly"], cfg["appendfsync"]
	switch {
	case aof != "yes":
		return Durability{Warning: "Redis runs without the append-only file (appendonly no): mail accepted since its last snapshot is LOST if Redis crashes or the machine loses power. Set 'appendonly yes' and 'appendfsync always' (or everysec with Redis >= 7.2) in redis.conf"}
	case fsync == "always":
		return Durability{}
	case versionAtLeast(version, 7, 2):
		// WAITAOF (Redis 7.2) lets each Put wait for its own fsync, so
		// everysec costs latency but loses nothing.
		return Durability{WaitAOF: true}
	default:
		return Durability{Warning: fmt.Sprintf("Redis %s fsyncs its append-only file %s and is older than 7.2 (no WAITAOF): up to a second of accepted mail can be lost if the machine loses power. Set 'appendfsync always' or upgrade Redis", version, fsync)}
	}
}

func redisVersion(ctx context.Context, rdb redis.UniversalClient) string {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return ""
}

func versionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(parts[0])
	mi, _ := strconv.Atoi(parts[1])
	return ma > major || ma == major && mi >= minor
}
