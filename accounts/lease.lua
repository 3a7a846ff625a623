-- Take an account's polling lease, or extend it, by compare-and-set on the
-- holder's value (host:pid:token): the token is unique to one fetcher, so
-- only the fetcher that wrote the value ever matches it.
--
-- KEYS[1] lease:<email>
-- ARGV[1] the caller's value   ARGV[2] ttl in milliseconds
-- ARGV[3] the value of a holder the caller proved dead, or "" for none
--
-- The lease is set to the caller's value, for ttl, when it is free (never
-- taken, expired, or lost by a Redis restart or failover), when it already
-- holds the caller's value (a renewal, also after a reconnect or a failed
-- release), or when it still holds the dead holder's value. Returns
-- {1, value, ttl} when the caller holds it now, else {0, holder's value,
-- milliseconds left}.
local cur = redis.call('GET', KEYS[1])
if not cur or cur == ARGV[1] or (ARGV[3] ~= '' and cur == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, ARGV[1], tonumber(ARGV[2])}
end
return {0, cur, redis.call('PTTL', KEYS[1])}
