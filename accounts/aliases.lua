-- Add and remove "Send mail as" aliases of one account atomically, so that
-- two admins adding the same alias to two accounts cannot both succeed.
--
-- KEYS[1] account:<email> (hash; field "aliases": space-separated, sorted)
-- KEYS[2] aliases (hash: alias -> owning account)
-- KEYS[3] accounts (set of emails)
-- ARGV[1] email   ARGV[2] change channel
-- then: n, n aliases to add; m, m aliases to remove (all lower-cased)
--
-- Returns {"ok"}, {"missing"}, {"taken", alias, owner} (an alias of
-- another account), {"account", alias} (a connected account's own
-- address) or {"absent", alias} (removing what the account does not have).
-- Nothing is changed unless the reply is "ok".
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local have = {}
for a in string.gmatch(redis.call('HGET', KEYS[1], 'aliases') or '', '%S+') do
  have[a] = true
end
local n = tonumber(ARGV[3])
local adds, removes = {}, {}
for j = 1, n do
  adds[j] = ARGV[3 + j]
end
local m = tonumber(ARGV[4 + n])
for j = 1, m do
  removes[j] = ARGV[4 + n + j]
end
for _, a in ipairs(adds) do
  local owner = redis.call('HGET', KEYS[2], a)
  if owner and owner ~= ARGV[1] then
    return {'taken', a, owner}
  end
  if a == ARGV[1] or redis.call('SISMEMBER', KEYS[3], a) == 1 then
    return {'account', a}
  end
end
for _, a in ipairs(removes) do
  if not have[a] then
    return {'absent', a}
  end
end
for _, a in ipairs(adds) do
  have[a] = true
  redis.call('HSET', KEYS[2], a, ARGV[1])
end
for _, a in ipairs(removes) do
  have[a] = nil
  redis.call('HDEL', KEYS[2], a)
end
local list = {}
for a in pairs(have) do
  list[#list + 1] = a
end
table.sort(list)
if #list == 0 then
  redis.call('HDEL', KEYS[1], 'aliases')
else
  redis.call('HSET', KEYS[1], 'aliases', table.concat(list, ' '))
end
redis.call('PUBLISH', ARGV[2], ARGV[1])
return {'ok'}
