-- Change fields of an existing account, and never create one: a late
-- write (a poll finishing, a token rotating) for an account that was never
-- connected must not leave half an account behind.
--
-- KEYS[1] account:<email> (hash)
-- ARGV[1] guard: "exists", or "live" (exists and not disconnected: a
--         token or error written after an admin's disconnect would put
--         the account back into service)
-- ARGV[2] channel to PUBLISH the email on, "" for none
-- ARGV[3] email
-- ARGV[4] condition field, "" for none; ARGV[5] its bound: change nothing
--         (and return "kept") when the field holds a value after the
--         bound. Times written in throttleLayout (fixed width, UTC)
--         compare as strings.
-- then: n, n field/value pairs to HSET; m, m fields to HDEL;
--       k, k field/increment pairs to HINCRBY
--
-- Returns "ok", "missing", "disconnected" or "kept".
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'missing'
end
if ARGV[1] == 'live' and redis.call('HGET', KEYS[1], 'state') == 'disconnected' then
  return 'disconnected'
end
if ARGV[4] ~= '' then
  local cur = redis.call('HGET', KEYS[1], ARGV[4])
  if cur and cur > ARGV[5] then
    return 'kept'
  end
end
local i = 6
local n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
i = i + 2 * n + 1
local m = tonumber(ARGV[i])
for j = 1, m do
  redis.call('HDEL', KEYS[1], ARGV[i + j])
end
i = i + m + 1
local k = tonumber(ARGV[i])
for j = 1, k do
  redis.call('HINCRBY', KEYS[1], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
if ARGV[2] ~= '' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 'ok'
