-- Ingest one parsed mail atomically: dedupe, thread, create or append,
-- index its Message-ID, publish the event. Running it as one script is
-- what makes two concurrent ingests of the same mail yield one ticket.
--
-- KEYS[1] seq           KEYS[2] tickets (zset)   KEYS[3] events (stream)
-- KEYS[4] seen:<dedupe> KEYS[5] msg:<own id> (or a dummy when none)
-- KEYS[6..5+n] msg:<ref id>, in threading priority order
--
-- ARGV[1] prefix          ARGV[2] n refs        ARGV[3] subject token id or ""
-- ARGV[4] sender email    ARGV[5] now (RFC 3339)
-- ARGV[6] ticket JSON without its opening "{" and without id
-- ARGV[7] comment JSON without its opening "{" (stored as is: read.go
--         puts back "{" and the ids; copying a mail-sized string in Lua
--         costs more than the rest of the script, so it is copied once,
--         into the event)
-- ARGV[8] participants, "\n"-separated  ARGV[9] suppress_triggers
-- ARGV[10] stream max length (0: no trim)  ARGV[11] own message id or ""
-- ARGV[12] noise reason ("" for a normal mail, see noise.go)
-- ARGV[13] sender rate limit (0: none)  ARGV[14] rate window in ms
-- ARGV[15..14+n] rule name of each ref ("in-reply-to" or "references")
--
-- Every key lives under the prefix; in Redis Cluster the prefix carries a
-- hash tag so that all of them share one slot (see store.go).
local p = ARGV[1]
local seen = redis.call('GET', KEYS[4])
if seen then
  return {'duplicate', seen}
end

local nrefs = tonumber(ARGV[2])
local sender = ARGV[4]
local maxlen = tonumber(ARGV[10])
local function publish(fields)
  if maxlen > 0 then
    return redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', unpack(fields))
  end
  return redis.call('XADD', KEYS[3], '*', unpack(fields))
end

-- Noise (auto-replies, bounces, our own mail) opens nothing; it is reported
-- on the ticket it is about, found by any reference, whoever sent it.
local noise = ARGV[12]
if noise ~= '' then
  local tid = '0'
  for i = 1, nrefs do
    local t = redis.call('GET', KEYS[5 + i])
    if t then tid = t break end
  end
  redis.call('SET', KEYS[4], tid .. ':0')
  local typ = 'mail.suppressed'
  if noise == 'bounce' then typ = 'mail.bounced' end
  local eid = publish({'type', typ, 'ticket', tid, 'reason', noise, 'suppress_triggers', 'true',
    'message_id', ARGV[11], 'data', '{' .. ARGV[7]})
  return {'suppressed', tid .. ':0', noise, eid}
end

-- A sender over its rate is a loop in the making (two robots answering
-- each other): keep the mail's bytes, report it, open nothing. The mail is
-- not marked seen, so an admin can ingest it again later.
local limit = tonumber(ARGV[13])
if limit > 0 and sender ~= '' then
  local rk = p .. 'rate:' .. sender
  local n = redis.call('INCR', rk)
  if n == 1 then redis.call('PEXPIRE', rk, ARGV[14]) end
  if n > limit then
    if n == limit + 1 then
      publish({'type', 'sender.rate_limited', 'ticket', '0', 'reason', 'rate-limited', 'sender', sender,
        'suppress_triggers', 'true', 'message_id', '', 'data', '{"sender":"' .. sender .. '","limit":' .. limit .. '}'})
    end
    local eid = publish({'type', 'mail.suppressed', 'ticket', '0', 'reason', 'rate-limited', 'suppress_triggers', 'true',
      'message_id', ARGV[11], 'data', '{' .. ARGV[7]})
    return {'suppressed', '0:0', 'rate-limited', eid}
  end
end

local target, rule = nil, ''
-- Header threading only joins a ticket the sender already takes part in,
-- so a reply to a newsletter never merges unrelated customers.
for i = 1, nrefs do
  local tid = redis.call('GET', KEYS[5 + i])
  if tid and sender ~= '' and redis.call('SISMEMBER', p .. 'ticket:' .. tid .. ':people', sender) == 1 then
    target, rule = tid, ARGV[14 + i]
    break
  end
end
if not target and ARGV[3] ~= '' and redis.call('EXISTS', p .. 'ticket:' .. ARGV[3]) == 1 then
  target, rule = ARGV[3], 'subject-token'
end

local now = ARGV[5]
local typ, id, idx, data
if target then
  id = target
  local tk = p .. 'ticket:' .. id
  idx = redis.call('HINCRBY', tk, 'comment_count', 1)
  data = '{"ticket":' .. id .. ',"index":' .. idx .. ',"threaded_by":"' .. rule .. '",' .. ARGV[7]
  redis.call('RPUSH', tk .. ':comments', ARGV[7])
  redis.call('HSET', tk .. ':threaded', idx, rule)
  -- A customer writing again reopens a solved ticket.
  if redis.call('HGET', tk, 'status') == 'solved' then
    redis.call('HSET', tk, 'status', 'open')
  end
  redis.call('HSET', tk, 'updated_at', now)
  typ = 'ticket.comment'
else
  id = redis.call('INCR', KEYS[1])
  local tk = p .. 'ticket:' .. id
  idx = 1
  local ticket = '{"id":' .. id .. ',' .. ARGV[6]
  redis.call('HSET', tk, 'data', ticket, 'status', 'new', 'updated_at', now, 'comment_count', 1)
  redis.call('RPUSH', tk .. ':comments', ARGV[7])
  redis.call('ZADD', KEYS[2], id, id)
  -- One concatenation builds the event: the ticket with its first comment.
  data = string.sub(ticket, 1, -2) .. ',"comments":[{"ticket":' .. id .. ',"index":1,' .. ARGV[7] .. ']}'
  typ = 'ticket.created'
end
for email in string.gmatch(ARGV[8], '[^\n]+') do
  redis.call('SADD', p .. 'ticket:' .. id .. ':people', email)
end

redis.call('SET', KEYS[4], id .. ':' .. idx)
if ARGV[11] ~= '' then
  redis.call('SET', KEYS[5], id)
end

local eid = publish({'type', typ, 'ticket', id, 'comment', idx, 'suppress_triggers', ARGV[9], 'message_id', ARGV[11], 'data', data})
return {typ, id .. ':' .. idx, rule, eid}
