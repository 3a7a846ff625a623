-- Ingest one parsed mail atomically: dedupe, thread, create or append,
-- index its Message-ID, publish the event. Running it as one script is
-- what makes two concurrent ingests of the same mail yield one ticket.
--
-- Every key it touches comes in KEYS, named by keys.go (Redis Cluster
-- routes a script by its declared keys; all of them share the prefix's
-- hash tag, so they live in one slot):
--
--   KEYS[1] seq            KEYS[2] tickets (zset)    KEYS[3] events (stream)
--   KEYS[4] seen:<dedupe>  KEYS[5] msg:<own Message-ID>  KEYS[6] rate:<sender>
--   KEYS[6+i]  msg:<ref i>, i = 1..#a.refs, in threading priority order
--   then four keys per id of a.tickets, in that order:
--     ticket:<id>, ticket:<id>:comments, ticket:<id>:people, ticket:<id>:threaded
--   then three per id from a.next_id to a.next_id + a.spare - 1, the ids
--   this ingest may create: ticket:<id>, ticket:<id>:comments, ticket:<id>:people
--
-- KEYS[5] and KEYS[6] are a placeholder when the mail has no Message-ID or
-- no rate limit applies; the script then leaves them alone.
--
-- ARGV[1] JSON, decoded once into `a` (ingestArgs in ingest.go):
--   sender            the mail's sender, lower-cased, or ""
--   message_id        its own Message-ID, or ""
--   now               RFC 3339, the ticket's updated_at
--   participants      who may thread later replies by headers
--   suppress_triggers "true"/"false", copied to the event
--   subject_ticket    the id of a "[#1042]" subject token, or ""
--   refs              the threading rule of each msg:<ref> key
--   tickets           the ids, as strings, of the tickets the references
--                     named when Go looked and of the subject token's
--   next_id, spare    the ids this ingest may create: the one after the
--                     last when Go looked, and a few more in case other
--                     ingests create tickets first
--   noise, noise_event  why the mail opens nothing (noise.go) and the event
--                     type that reports it; "" for a normal mail
--   rate              {limit, window_ms, reason}: limit 0 when none applies
--                     (no limit set, no sender, or the initial import)
--   stream_max_len    trim the stream to about this many entries; 0: never
--   events            {created, comment, suppressed, rate_limited}: event
--                     type names (EventType in events.go)
--   subject_rule      the rule name of subject-token threading
-- ARGV[2] the ticket JSON without its opening "{" and without its id
-- ARGV[3] the comment JSON without its opening "{", stored as is: read.go
--         puts back "{" and the ids. It is mail-sized, so the script never
--         decodes it and copies it once, into the event.
--
-- Returns {'duplicate', '<ticket>:<comment>'}, {'suppressed', ..., reason,
-- event id}, {event type, '<ticket>:<comment>', rule, event id}, or
-- {'stale'} before writing anything when the keys of a ticket it needs
-- were not given (a reference or the last id moved since Go looked): Go
-- looks again and retries.
local a = cjson.decode(ARGV[1])
local seen = redis.call('GET', KEYS[4])
if seen then
  return {'duplicate', seen}
end

local function publish(fields)
  if a.stream_max_len > 0 then
    return redis.call('XADD', KEYS[3], 'MAXLEN', '~', a.stream_max_len, '*', unpack(fields))
  end
  return redis.call('XADD', KEYS[3], '*', unpack(fields))
end

-- fields returns name, value pairs as JSON object members, each encoded
-- by cjson: nothing is pasted into JSON unescaped. The script puts them in
-- front of the members Go encoded (ARGV[2], ARGV[3]) in one concatenation
-- each: a mail-sized string copied once more costs more than the rest of
-- the script.
local function fields(...)
  local f, parts = {...}, {}
  for i = 1, #f, 2 do
    parts[#parts + 1] = cjson.encode(f[i]) .. ':' .. cjson.encode(f[i + 1])
  end
  return table.concat(parts, ',')
end

-- Noise (auto-replies, bounces, our own mail) opens nothing; it is reported
-- on the ticket it is about, found by any reference, whoever sent it.
if a.noise ~= '' then
  local tid = '0'
  for i = 1, #a.refs do
    local t = redis.call('GET', KEYS[6 + i])
    if t then tid = t break end
  end
  redis.call('SET', KEYS[4], tid .. ':0')
  local eid = publish({'type', a.noise_event, 'ticket', tid, 'reason', a.noise, 'suppress_triggers', 'true',
    'message_id', a.message_id, 'data', '{' .. ARGV[3]})
  return {'suppressed', tid .. ':0', a.noise, eid}
end

-- The keys of a ticket that exists (named by a reference or the subject
-- token), and of a ticket this ingest creates; nil when not given.
local named = {}
for i, id in ipairs(a.tickets) do named[id] = 6 + #a.refs + 4 * (i - 1) end
local function existing(id)
  local k = named[id]
  if k then return {hash = KEYS[k + 1], comments = KEYS[k + 2], people = KEYS[k + 3], threaded = KEYS[k + 4]} end
end
local function created(id)
  local n = tonumber(id) - a.next_id
  if n >= 0 and n < a.spare then
    local k = 6 + #a.refs + 4 * #a.tickets + 3 * n
    return {hash = KEYS[k + 1], comments = KEYS[k + 2], people = KEYS[k + 3]}
  end
end

-- Decide first, write after: a stale answer must leave nothing behind.
local id, tk, rule = nil, nil, ''
-- Header threading only joins a ticket the sender already takes part in,
-- so a reply to a newsletter never merges unrelated customers.
for i = 1, #a.refs do
  local tid = redis.call('GET', KEYS[6 + i])
  if tid and a.sender ~= '' then
    local t = existing(tid)
    if not t then return {'stale'} end
    if redis.call('SISMEMBER', t.people, a.sender) == 1 then
      id, tk, rule = tid, t, a.refs[i]
      break
    end
  end
end
if not id and a.subject_ticket ~= '' then
  local t = existing(a.subject_ticket)
  if not t then return {'stale'} end
  if redis.call('EXISTS', t.hash) == 1 then
    id, tk, rule = a.subject_ticket, t, a.subject_rule
  end
end
local target = id
if not target then
  id = tostring((tonumber(redis.call('GET', KEYS[1])) or 0) + 1)
  tk = created(id)
  if not tk then return {'stale'} end
end

-- A sender over its rate is a loop in the making (two robots answering
-- each other): keep the mail's bytes, report it, open nothing. The mail is
-- not marked seen, so an admin can ingest it again later.
local limit = a.rate.limit
if limit > 0 then
  local n = redis.call('INCR', KEYS[6])
  if n == 1 then redis.call('PEXPIRE', KEYS[6], a.rate.window_ms) end
  if n > limit then
    if n == limit + 1 then
      publish({'type', a.events.rate_limited, 'ticket', '0', 'reason', a.rate.reason, 'sender', a.sender,
        'suppress_triggers', 'true', 'message_id', '', 'data', cjson.encode({sender = a.sender, limit = limit})})
    end
    local eid = publish({'type', a.events.suppressed, 'ticket', '0', 'reason', a.rate.reason, 'suppress_triggers', 'true',
      'message_id', a.message_id, 'data', '{' .. ARGV[3]})
    return {'suppressed', '0:0', a.rate.reason, eid}
  end
end

local typ, idx, data
if target then
  idx = redis.call('HINCRBY', tk.hash, 'comment_count', 1)
  data = '{' .. fields('ticket', tonumber(id), 'index', idx, 'threaded_by', rule) .. ',' .. ARGV[3]
  redis.call('RPUSH', tk.comments, ARGV[3])
  redis.call('HSET', tk.threaded, idx, rule)
  -- A customer writing again reopens a solved ticket.
  if redis.call('HGET', tk.hash, 'status') == 'solved' then
    redis.call('HSET', tk.hash, 'status', 'open')
  end
  redis.call('HSET', tk.hash, 'updated_at', a.now)
  typ = a.events.comment
else
  redis.call('INCR', KEYS[1])
  idx = 1
  local ticket = '{' .. fields('id', tonumber(id)) .. ',' .. ARGV[2]
  redis.call('HSET', tk.hash, 'data', ticket, 'status', 'new', 'updated_at', a.now, 'comment_count', 1)
  redis.call('RPUSH', tk.comments, ARGV[3])
  redis.call('ZADD', KEYS[2], id, id)
  -- The event is the ticket with its first comment: the ticket's object,
  -- its closing brace replaced by the comments array.
  data = string.sub(ticket, 1, -2) .. ',"comments":[{' .. fields('ticket', tonumber(id), 'index', 1) .. ',' .. ARGV[3] .. ']}'
  typ = a.events.created
end
for _, email in ipairs(a.participants) do
  redis.call('SADD', tk.people, email)
end

redis.call('SET', KEYS[4], id .. ':' .. idx)
if a.message_id ~= '' then
  redis.call('SET', KEYS[5], id)
end

local eid = publish({'type', typ, 'ticket', id, 'comment', idx, 'suppress_triggers', a.suppress_triggers,
  'message_id', a.message_id, 'data', data})
return {typ, id .. ':' .. idx, rule, eid}
