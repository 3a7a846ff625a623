package smtprelay

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/sendlimit"
)

// window is Google's sending day: a rolling 24 hours, not a calendar day.
const window = 24 * time.Hour

// Quota counts, in Redis and shared by every mailgate process, what each
// account sent through Gmail in the last 24 hours.
type Quota struct {
	rdb redis.UniversalClient
	p   string
	now func() time.Time
}

// NewQuota returns the quota counters kept beside queue q (for status
// displays; the Relay has its own).
func NewQuota(q *Queue) *Quota { return &Quota{rdb: q.rdb, p: q.p, now: q.opts.Now} }

func (q *Quota) sentKey(a string) string  { return q.p + "relay:quota:" + a + ":sent" }
func (q *Quota) rcptKey(a string) string  { return q.p + "relay:quota:" + a + ":rcpt" }
func (q *Quota) extKey(a string) string   { return q.p + "relay:quota:" + a + ":ext" }
func (q *Quota) blockKey(a string) string { return q.p + "relay:quota:" + a + ":blocked" }
func (q *Quota) warnKey(a string) string  { return q.p + "relay:quota:" + a + ":warned" }

// limitKey holds the daily message limit the relay last applied to the
// account, so that every view (`mailgate status`, /status, metrics) shows
// the limit the relay enforces, not the one in the reader's own config.
func (q *Quota) limitKey(a string) string { return q.p + "relay:quota:" + a + ":limit" }

// reserveScript counts one message and its recipients against the limits,
// atomically, so that two relays cannot both take the last slot. It
// refuses when Gmail itself said the limit was reached (blocked), or when
// any count would go over its limit. Members are "<queue id>:<n>", scored
// by time; what is older than the window is dropped first.
var reserveScript = redis.NewScript(`
local now, since = tonumber(ARGV[1]), tonumber(ARGV[1]) - tonumber(ARGV[2])
redis.call('SET', KEYS[6], ARGV[3], 'PX', ARGV[2])
if redis.call('EXISTS', KEYS[4]) == 1 then return {0, -1} end
for i = 1, 3 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', since) end
local sent = redis.call('ZCARD', KEYS[1])
local rcpt = redis.call('ZCARD', KEYS[2])
local ext = redis.call('ZCARD', KEYS[3])
local nr, ne = tonumber(ARGV[5]), tonumber(ARGV[6])
local lm, lr, le = tonumber(ARGV[3]), tonumber(ARGV[7]), tonumber(ARGV[8])
if sent + 1 > lm or (lr > 0 and rcpt + nr > lr) or (le > 0 and ext + ne > le) then
  return {0, sent}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
for i = 1, nr do redis.call('ZADD', KEYS[2], now, ARGV[4] .. ':' .. i) end
for i = 1, ne do redis.call('ZADD', KEYS[3], now, ARGV[4] .. ':' .. i) end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
-- Report the crossing of the warning threshold once per crossing.
local warn = tonumber(ARGV[9])
local crossed = 0
if sent + 1 >= warn and redis.call('SET', KEYS[5], '1', 'NX', 'PX', ARGV[2]) then crossed = 1 end
if sent + 1 < warn then redis.call('DEL', KEYS[5]) end
return {1, sent + 1, crossed}`)

// reservation is the outcome of Reserve.
type reservation struct {
	ok      bool
	used    int  // messages in the window, this one included when ok
	blocked bool // Gmail said its limit was reached
	warn    bool // this message crossed the warning threshold
}

// Reserve takes one message with rcpts recipients (ext of them external)
// from account's quota, or says why not.
func (q *Quota) Reserve(ctx context.Context, account, id string, rcpts, ext int, l sendlimit.Limits, warnAt float64) (reservation, error) {
	warn := sendlimit.WarnAt(l.Messages, warnAt)
	keys := []string{q.sentKey(account), q.rcptKey(account), q.extKey(account), q.blockKey(account), q.warnKey(account), q.limitKey(account)}
	res, err := reserveScript.Run(ctx, q.rdb, keys, q.now().UnixMilli(), window.Milliseconds(), l.Messages, id,
		rcpts, ext, l.Recipients, l.External, warn).Int64Slice()
	if err != nil {
		return reservation{}, fmt.Errorf("quota %s: %w", account, err)
	}
	r := reservation{ok: res[0] == 1, used: int(res[1])}
	if res[1] == -1 {
		r.blocked, r.used = true, 0
	}
	r.warn = len(res) > 2 && res[2] == 1
	return r, nil
}

// Release gives back a reservation of a message with rcpts recipients
// whose message did not go out via Gmail after all. Reserve named the
// recipient members "<id>:1".."<id>:<n>" (and the external ones a prefix
// of those), so they are removed by name, not looked for.
func (q *Quota) Release(ctx context.Context, account, id string, rcpts int) {
	members := make([]any, rcpts)
	for i := range members {
		members[i] = id + ":" + strconv.Itoa(i+1)
	}
	q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, q.sentKey(account), id)
		if rcpts > 0 {
			p.ZRem(ctx, q.rcptKey(account), members...)
			p.ZRem(ctx, q.extKey(account), members...)
		}
		return nil
	})
}

// Block marks account over quota now, because Gmail answered with its
// daily-limit error, for the rest of the window at most.
func (q *Quota) Block(ctx context.Context, account string) error {
	return q.rdb.Set(ctx, q.blockKey(account), strconv.FormatInt(q.now().Unix(), 10), window).Err()
}

// Used returns how many messages account sent via Gmail in the last 24
// hours, and whether Gmail has blocked it.
func (q *Quota) Used(ctx context.Context, account string) (used int64, blocked bool, err error) {
	var card *redis.IntCmd
	var ex *redis.IntCmd
	_, err = q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRemRangeByScore(ctx, q.sentKey(account), "-inf", strconv.FormatInt(q.now().Add(-window).UnixMilli(), 10))
		card = p.ZCard(ctx, q.sentKey(account))
		ex = p.Exists(ctx, q.blockKey(account))
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return card.Val(), ex.Val() == 1, nil
}

// AppliedLimit returns the daily message limit the relay last applied to
// account within the window, or 0 when it applied none (nothing sent).
func (q *Quota) AppliedLimit(ctx context.Context, account string) (int, error) {
	n, err := q.rdb.Get(ctx, q.limitKey(account)).Int()
	if err == redis.Nil {
		return 0, nil
	}
	return n, err
}

// FreesAt returns when the oldest message in account's window leaves it,
// which is when a deferred message can go via Gmail again.
func (q *Quota) FreesAt(ctx context.Context, account string) time.Time {
	if ttl, err := q.rdb.PTTL(ctx, q.blockKey(account)).Result(); err == nil && ttl > 0 {
		return q.now().Add(ttl)
	}
	oldest, err := q.rdb.ZRangeWithScores(ctx, q.sentKey(account), 0, 0).Result()
	if err != nil || len(oldest) == 0 {
		return q.now().Add(time.Minute)
	}
	return time.UnixMilli(int64(oldest[0].Score)).Add(window)
}
