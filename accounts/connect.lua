-- Connect or reconnect one account atomically, so that a concurrent
-- reader never sees a connected account without its token, and the
-- "first connect" decision is made once.
--
-- KEYS[1] account:<email> (hash)   KEYS[2] accounts (set of emails)
-- KEYS[3] aliases (hash: alias -> account)
-- ARGV[1] email   ARGV[2] kind ("" keeps the stored one, else gmail)
-- ARGV[3] sealed refresh token   ARGV[4] now (RFC 3339)
-- ARGV[5] import_recent   ARGV[6] send_via_gmail ("1"/"0")
-- ARGV[7] fallback   ARGV[8] change channel
--
-- Returns 1 for a reconnect, 0 for a first connect. A reconnect keeps the
-- cursor, counters, import choice and import_done: that is what prevents
-- duplicate tickets.
-- An address is an account or another account's alias, never both: the
-- relay could not tell whose Gmail its mail goes through.
local owner = redis.call('HGET', KEYS[3], ARGV[1])
if owner then
  return redis.error_reply('ALIAS ' .. owner)
end
local existed = redis.call('HEXISTS', KEYS[1], 'connected_at') == 1
local kind = ARGV[2]
if kind == '' then
  kind = redis.call('HGET', KEYS[1], 'kind') or 'gmail'
end
redis.call('HSET', KEYS[1], 'email', ARGV[1], 'kind', kind, 'state', 'connected',
  'token', ARGV[3], 'updated_at', ARGV[4])
redis.call('HDEL', KEYS[1], 'warning', 'last_error', 'error_at')
if not existed then
  redis.call('HSET', KEYS[1], 'connected_at', ARGV[4], 'import_recent', ARGV[5],
    'import_done', '0', 'imported', '0', 'quarantined', '0',
    'send_via_gmail', ARGV[6], 'fallback', ARGV[7])
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[8], ARGV[1])
if existed then
  return 1
end
return 0
