-- Ingest a batch of parsed mails atomically, one after the other: dedupe,
-- thread, create or append, index each Message-ID, publish the events.
-- Running it as one script is what makes two concurrent ingests of the
-- same mail yield one ticket; running a whole FETCH batch in one call is
-- what lets Redis append (and, with appendfsync always, fsync) the batch
-- at once. A mail threads onto a ticket opened earlier in the same batch,
-- and a mail seen earlier in it is a duplicate.
--
-- Every key it touches comes in KEYS, named by keys.go (Redis Cluster
-- routes a script by its declared keys; all of them share the prefix's
-- hash tag, so they live in one slot):
--
--   KEYS[1] seq   KEYS[2] tickets (zset)   KEYS[3] events (stream)
--   then four keys per id of a.ids, in that order:
--     ticket:<id>, ticket:<id>:comments, ticket:<id>:people, ticket:<id>:threaded
--   then, per mail, from its offset k (m.k):
--     KEYS[k+1] seen:<dedupe>   KEYS[k+2] msg:<own Message-ID>   KEYS[k+3] rate:<sender>
--     KEYS[k+3+i] msg:<ref i>, i = 1..#m.refs, in threading priority order
--     KEYS[k+4+#m.refs] gmthread:<account>:<X-GM-THRID>, if m.gmail_thread
--   KEYS[k+2] and KEYS[k+3] are a placeholder when the mail has no
--   Message-ID or no rate limit applies; the script then leaves them alone.
--
-- ARGV[1] JSON, decoded once into `a` (batchArgs in ingest.go):
--   now               RFC 3339, the tickets' updated_at
--   ids               the ids, as strings, whose keys are given: the
--                     tickets the references named when Go looked, the
--                     subject tokens', and the ids this batch may create
--                     (the one after the last when Go looked, and more in
--                     case other ingests create tickets first)
--   stream_max_len    trim the stream to about this many entries; 0: never
--   events            {created, comment, suppressed, rate_limited}: event
--                     type names (EventType in events.go)
--   subject_rule      the rule name of subject-token threading
--   gmail_rule        the rule name of Gmail-conversation threading
--   token_anyone      true: a subject token threads whoever sent the mail
--                     (tickets.token_threading: anyone); false: only a
--                     sender who takes part in the ticket (takes_part)
--   related_reason    why a ticket a stranger's token named is only
--                     recorded as related_ticket of the new one
--   rate_reason       the reason of a mail suppressed by the rate limit
--   unthreaded        the reason of an agent's mail that joins no ticket
--   mails             one object per mail, in order (mailArgs in ingest.go):
--     k               where its keys start, see above
--     sender          the mail's sender, lower-cased, or ""
--     message_id      its own Message-ID, or ""
--     participants    who may thread later replies by headers
--     sender_support  true when the sender is one of our support addresses
--     suppress_triggers  "true"/"false", copied to the event
--     subject_ticket  the id of a "[#1042]" subject token, or ""
--     refs            the threading rule of each msg:<ref> key
--     gmail_thread    true when the mail is in a Gmail conversation
--                     (X-GM-THRID) and its gmthread key is given
--     noise, noise_event  why the mail opens nothing (noise.go) and the
--                     event type that reports it; "" for a normal mail
--     rate            {limit, window_ms}: limit 0 when none applies
--                     (no limit set, no sender, or the initial import)
--     agent           true for an agent's mail from the Sent folder: its
--                     participants are its recipients, one of whom must
--                     take part in the ticket its headers name; it never
--                     opens a ticket (reply {'skipped', ...} instead)
-- ARGV[3i-1] the ticket JSON of mail i without its opening "{" and its id
--         ("" for noise)
-- ARGV[3i]   the members of its comment JSON but its body, without braces
-- ARGV[3i+1] the members of its body (text, html), without braces
-- A comment is stored once, whole, with its ticket, index and rule, in its
-- ticket's comments list: a ticket event carries it without its body
-- (mail-sized), which a consumer reads from the list. Noise is stored
-- nowhere, so its event carries the whole mail. The script never decodes
-- these: each is copied into what is stored in one concatenation.
-- Returns one reply per mail, in order: {'duplicate', '<ticket>:<comment>'},
-- {'suppressed', ..., reason, event id}, {'skipped', '0:0', reason} or
-- {event type, '<ticket>:<comment>', rule, event id, related ticket,
-- related reason} (the last two "" unless a new ticket records a related
-- one); the last is {'stale'} when a mail needed the keys of a ticket that
-- were not given (a reference or the last id moved since Go looked): that
-- mail wrote nothing and the mails after it were not tried, so Go looks
-- again and runs them in a new call.
local a = cjson.decode(ARGV[1])

local function publish(fields)
  if a.stream_max_len > 0 then
    return redis.call('XADD', KEYS[3], 'MAXLEN', '~', a.stream_max_len, '*', unpack(fields))
  end
  return redis.call('XADD', KEYS[3], '*', unpack(fields))
end

-- fields returns name, value pairs as JSON object members, each encoded
-- by cjson: nothing is pasted into JSON unescaped. The script puts them in
-- front of the members Go encoded (the ticket and comment JSON) in one
-- concatenation each: a mail-sized string copied once more costs more than
-- the rest of the script.
local function fields(...)
  local f, parts = {...}, {}
  for i = 1, #f, 2 do
    parts[#parts + 1] = cjson.encode(f[i]) .. ':' .. cjson.encode(f[i + 1])
  end
  return table.concat(parts, ',')
end

-- The keys of each ticket given, by id; nil when not given.
local given = {}
for i, id in ipairs(a.ids) do
  local k = 3 + 4 * (i - 1)
  given[id] = {hash = KEYS[k + 1], comments = KEYS[k + 2], people = KEYS[k + 3], threaded = KEYS[k + 4]}
end

-- takes_part says whether mail m may join ticket t: its sender is the
-- requester or a CC of one of the ticket's mails (the people set,
-- participants in build.go) or one of our support addresses; for an
-- agent's mail from the Sent folder, one of its recipients is in the
-- people set. The header rules and the subject-token rule join only such
-- a ticket.
local function takes_part(t, m)
  if m.agent then
    for _, p in ipairs(m.participants) do
      if redis.call('SISMEMBER', t.people, p) == 1 then return true end
    end
    return false
  end
  if m.sender_support then return true end
  return m.sender ~= '' and redis.call('SISMEMBER', t.people, m.sender) == 1
end

-- ingest one mail m, its ticket JSON tdata and its comment's head and
-- body members; nil when stale, before writing anything.
local function ingest(m, tdata, head, body)
  local k = m.k
  local seen = redis.call('GET', KEYS[k + 1])
  if seen then
    return {'duplicate', seen}
  end

  -- Noise (auto-replies, bounces, our own mail) opens nothing; it is
  -- reported on the ticket it is about, found by any reference, whoever
  -- sent it.
  if m.noise ~= '' then
    local tid = '0'
    for i = 1, #m.refs do
      local t = redis.call('GET', KEYS[k + 3 + i])
      if t then tid = t break end
    end
    redis.call('SET', KEYS[k + 1], tid .. ':0')
    local eid = publish({'type', m.noise_event, 'ticket', tid, 'reason', m.noise, 'suppress_triggers', 'true',
      'message_id', m.message_id, 'data', '{' .. head .. ',' .. body .. '}'})
    return {'suppressed', tid .. ':0', m.noise, eid}
  end

  -- Decide first, write after: a stale answer must leave nothing behind.
  local id, tk, rule = nil, nil, ''
  -- Header threading only joins a ticket the sender already takes part
  -- in, so a reply to a newsletter never merges unrelated customers.
  for i = 1, #m.refs do
    local tid = redis.call('GET', KEYS[k + 3 + i])
    if tid and m.sender ~= '' then
      local t = given[tid]
      if not t then return nil end
      if takes_part(t, m) then
        id, tk, rule = tid, t, m.refs[i]
        break
      end
    end
  end
  -- Gmail conversation (X-GM-THRID): its ticket, with the header rules'
  -- scoping (a stranger in the conversation does not join it).
  if not id and m.gmail_thread and m.sender ~= '' then
    local tid = redis.call('GET', KEYS[k + 4 + #m.refs])
    if tid then
      local t = given[tid]
      if not t then return nil end
      if takes_part(t, m) then
        id, tk, rule = tid, t, a.gmail_rule
      end
    end
  end
  -- A subject token is easy to forge: it joins the ticket only for a
  -- sender who takes part in it (unless token_anyone). A stranger's mail
  -- opens a ticket of its own that names the token's as related, so no
  -- one can write into a customer's conversation by typing "[#1]".
  local related, why = '', ''
  if not id and m.subject_ticket ~= '' then
    local t = given[m.subject_ticket]
    if not t then return nil end
    if redis.call('EXISTS', t.hash) == 1 then
      if a.token_anyone or takes_part(t, m) then
        id, tk, rule = m.subject_ticket, t, a.subject_rule
      else
        related, why = m.subject_ticket, a.related_reason
      end
    end
  end
  local target = id
  if not target and m.agent then
    return {'skipped', '0:0', a.unthreaded}
  end
  if not target then
    id = tostring((tonumber(redis.call('GET', KEYS[1])) or 0) + 1)
    tk = given[id]
    if not tk then return nil end
  end

  -- A sender over its rate is a loop in the making (two robots answering
  -- each other): keep the mail's bytes, report it, open nothing. The mail
  -- is not marked seen, so an admin can ingest it again later.
  local limit = m.rate.limit
  if limit > 0 then
    local n = redis.call('INCR', KEYS[k + 3])
    if n == 1 then redis.call('PEXPIRE', KEYS[k + 3], m.rate.window_ms) end
    if n > limit then
      if n == limit + 1 then
        publish({'type', a.events.rate_limited, 'ticket', '0', 'reason', a.rate_reason, 'sender', m.sender,
          'suppress_triggers', 'true', 'message_id', '', 'data', cjson.encode({sender = m.sender, limit = limit})})
      end
      local eid = publish({'type', a.events.suppressed, 'ticket', '0', 'reason', a.rate_reason, 'suppress_triggers', 'true',
        'message_id', m.message_id, 'data', '{' .. head .. ',' .. body .. '}'})
      return {'suppressed', '0:0', a.rate_reason, eid}
    end
  end

  local typ, idx, data
  if target then
    idx = redis.call('HINCRBY', tk.hash, 'comment_count', 1)
    local ids = '{' .. fields('ticket', tonumber(id), 'index', idx, 'threaded_by', rule) .. ',' .. head
    redis.call('RPUSH', tk.comments, ids .. ',' .. body .. '}')
    data = ids .. '}'
    redis.call('HSET', tk.threaded, idx, rule)
    -- A customer writing again reopens a solved ticket; an agent's
    -- answer does not.
    if not m.agent and redis.call('HGET', tk.hash, 'status') == 'solved' then
      redis.call('HSET', tk.hash, 'status', 'open', 'updated_at', a.now)
    else
      redis.call('HSET', tk.hash, 'updated_at', a.now)
    end
    typ = a.events.comment
  else
    redis.call('INCR', KEYS[1])
    idx = 1
    local own = fields('id', tonumber(id))
    if related ~= '' then
      own = fields('id', tonumber(id), 'related_ticket', tonumber(related), 'related_reason', why)
    end
    local ticket = '{' .. own .. ',' .. tdata
    redis.call('HSET', tk.hash, 'data', ticket, 'status', 'new', 'updated_at', a.now, 'comment_count', 1)
    local ids = '{' .. fields('ticket', tonumber(id), 'index', 1) .. ',' .. head
    redis.call('RPUSH', tk.comments, ids .. ',' .. body .. '}')
    redis.call('ZADD', KEYS[2], id, id)
    -- The event is the ticket with its first comment: the ticket's object,
    -- its closing brace replaced by the comments array.
    data = string.sub(ticket, 1, -2) .. ',"comments":[' .. ids .. '}]}'
    typ = a.events.created
  end
  if #m.participants > 0 then
    redis.call('SADD', tk.people, unpack(m.participants))
  end

  redis.call('SET', KEYS[k + 1], id .. ':' .. idx)
  if m.message_id ~= '' then
    redis.call('SET', KEYS[k + 2], id)
  end
  -- The conversation stays with the first ticket it opened or joined.
  if m.gmail_thread then
    redis.call('SET', KEYS[k + 4 + #m.refs], id, 'NX')
  end

  local ev = {'type', typ, 'ticket', id, 'comment', idx, 'suppress_triggers', m.suppress_triggers,
    'message_id', m.message_id, 'data', data}
  if m.agent then
    -- Consumers tell an agent's answer from a customer's mail by this.
    ev[#ev + 1], ev[#ev + 2] = 'author', 'agent'
  end
  local eid = publish(ev)
  return {typ, id .. ':' .. idx, rule, eid, related, why}
end

local out = {}
for i, m in ipairs(a.mails) do
  local r = ingest(m, ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1])
  if not r then
    out[#out + 1] = {'stale'}
    break
  end
  out[#out + 1] = r
end
return out
