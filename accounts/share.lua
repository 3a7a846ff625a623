-- A fetcher process's heartbeat: the live processes sharing the accounts,
-- each with how many account leases it holds, in one hash so that one call
-- per process and renewal period is all it costs. Expiry uses the server's
-- clock, so the processes' clocks need not agree.
--
-- KEYS[1] fetchers (hash: holder -> "<expiry ms> <leases held>")
-- KEYS[2] fetchers:seen (hash: holder -> time of its last heartbeat, ms),
--         kept apart so that the first hash keeps the form every version
--         of this script reads
-- ARGV[1] the caller's holder value (host:pid:token)
-- ARGV[2] ttl in milliseconds   ARGV[3] leases the caller holds
--
-- Entries past their expiry are removed; the caller's is set. Returns the
-- live entries, the caller's included: {holder, held, holder, held, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local exp, held = string.match(all[i + 1], '^(%d+) (%d+)$')
  if all[i] ~= ARGV[1] then
    if not exp or tonumber(exp) <= now then
      redis.call('HDEL', KEYS[1], all[i])
    else
      out[#out + 1] = all[i]
      out[#out + 1] = held
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[2])) .. ' ' .. ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], now)
-- Times of processes no longer listed (gone, or dropped by a process that
-- does not keep this hash) go too.
for _, h in ipairs(redis.call('HKEYS', KEYS[2])) do
  if redis.call('HEXISTS', KEYS[1], h) == 0 then
    redis.call('HDEL', KEYS[2], h)
  end
end
out[#out + 1] = ARGV[1]
out[#out + 1] = ARGV[3]
return out
