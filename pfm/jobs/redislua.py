"""The Redis queue's atomic steps, as Lua scripts.

Many hosts share one Redis, so every step that moves a job between states
runs as one script: Redis runs a script alone, so no job is lost or claimed
twice between two commands. Times come from the server's clock (TIME), so
hosts whose clocks disagree still agree on leases and delays.

Keys, under a prefix P (default `pfm:jobs`; written into each script's text,
where it costs no argument):
  P:id             the last job id (INCR: ids are never reused)
  P:job:ID         hash: q, call, max, n (attempts started), state, enq (enqueued
                   at), at (see JobInfo.at), err (the last traceback)
  P:queues         set of queue names (dropped by `stats` once a queue is empty)
  P:ready:Q        list of ready ids: pushed on the left, claimed from the right
  P:delayed:Q      zset id -> when it may run (delays and retry back-off)
  P:running:Q      zset id -> when its lease ends
  P:dead:Q         zset id -> when it died
  P:wake:Q         list holding at most one token: a consumer waiting for
                   work blocks on it (BLPOP), so an idle consumer costs no
                   polling and one new job wakes one consumer

Redis Cluster is not supported: the scripts build key names as they go.
"""

from __future__ import annotations

PRELUDE = r"""
local P = '__PREFIX__'
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function wake(q)
  local w = P .. ':wake:' .. q
  if redis.call('LLEN', w) == 0 then redis.call('LPUSH', w, '1') end
end
-- Take job `id` out of wherever state `s` keeps it.
local function detach(q, id, s)
  if s == 'running' then return redis.call('ZREM', P .. ':running:' .. q, id)
  elseif s == 'ready' then return redis.call('LREM', P .. ':ready:' .. q, 1, id)
  elseif s == 'delayed' then return redis.call('ZREM', P .. ':delayed:' .. q, id)
  elseif s == 'dead' then return redis.call('ZREM', P .. ':dead:' .. q, id)
  end
  return 0
end
-- The job hash's (n, state) if attempt `n` still owns the job, else nil.
local function owned(key, n)
  local job = redis.call('HMGET', key, 'n', 'state')
  if job[1] ~= n or job[2] == 'done' or not job[2] then return nil end
  return job
end
"""

# ARGV: "QUEUE MAX_ATTEMPTS DELAY CLIENT_TIME\nCALL" -> id
# The cheapest script of all, as it runs inside web requests: one argument
# (redis-py's packing costs per argument), a ready job's hash has no 'n' (no
# attempt yet) and no 'at', and the server's clock is read only for a delay.
ENQUEUE = PRELUDE + r"""
local q, max, delay, enq, call = string.match(ARGV[1], '^(%S+) (%d+) (%S+) (%S+)\n(.*)$')
delay = tonumber(delay)
local id = redis.call('INCR', P .. ':id')
local key = P .. ':job:' .. id
if delay > 0 then
  local at = now() + delay
  redis.call('HSET', key, 'q', q, 'call', call, 'max', max, 'state', 'delayed',
             'enq', enq, 'at', at)
  redis.call('ZADD', P .. ':delayed:' .. q, at, id)
else
  redis.call('HSET', key, 'q', q, 'call', call, 'max', max, 'state', 'ready', 'enq', enq)
  -- A queue that already had ready jobs is known to `stats`, and is being
  -- worked on or has a wake-up pending (claim passes one on while jobs remain).
  if redis.call('LPUSH', P .. ':ready:' .. q, id) > 1 then return id end
end
redis.call('SADD', P .. ':queues', q)
wake(q)
return id
"""

# claim(lease, first): the queues are ARGV[first...]. Returns {id, queue, call,
# attempt, max_attempts}, or the seconds until a delayed job or a lease comes
# due (a string), or false.
CLAIM_FN = r"""
local function claim(lease, first)
  local t = now()
  local due = nil
  for i = first, #ARGV do
    local q = ARGV[i]
    local ready, running = P .. ':ready:' .. q, P .. ':running:' .. q
    local delayed = P .. ':delayed:' .. q
    -- Leases that ran out: the job is ready again, or dead after its last attempt.
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', running, '-inf', t, 'LIMIT', 0, 100)) do
      redis.call('ZREM', running, id)
      local key = P .. ':job:' .. id
      local job = redis.call('HMGET', key, 'n', 'max')
      if job[1] then
        local err = 'the lease of attempt ' .. job[1] ..
                    ' expired: its consumer was lost (killed, or stopped at once)'
        if tonumber(job[1]) >= tonumber(job[2]) then
          redis.call('HSET', key, 'state', 'dead', 'at', t, 'err', err)
          redis.call('ZADD', P .. ':dead:' .. q, t, id)
        else
          redis.call('HSET', key, 'state', 'ready', 'at', t, 'err', err)
          redis.call('RPUSH', ready, id)
        end
      end
    end
    -- Delayed jobs whose time has come join the ready ones, first in line.
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', t, 'LIMIT', 0, 100)) do
      redis.call('ZREM', delayed, id)
      redis.call('HSET', P .. ':job:' .. id, 'state', 'ready')
      redis.call('RPUSH', ready, id)
    end
    while true do
      local id = redis.call('RPOP', ready)
      if not id then break end
      local key = P .. ':job:' .. id
      local job = redis.call('HMGET', key, 'call', 'max', 'n')
      if job[1] then
        local n = (tonumber(job[3]) or 0) + 1
        redis.call('HSET', key, 'n', n, 'state', 'running', 'at', t + lease)
        redis.call('ZADD', running, t + lease, id)
        -- More work: pass the wake-up on to another waiting consumer.
        if redis.call('LLEN', ready) > 0 then wake(q) end
        return {id, q, job[1], n, job[2]}
      end
    end
    for _, z in ipairs({delayed, running}) do
      local head = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      if head[2] and (due == nil or tonumber(head[2]) < due) then due = tonumber(head[2]) end
    end
  end
  if due then return tostring(math.max(due - t, 0)) end
  return false
end
"""

# ARGV: lease, queue...
CLAIM = PRELUDE + CLAIM_FN + r"""
return claim(tonumber(ARGV[1]), 2)
"""

# ARGV: queue, id, attempt, lease -> 1, or 0 if the lease was lost
RENEW = PRELUDE + r"""
local key = P .. ':job:' .. ARGV[2]
local job = owned(key, ARGV[3])
if not job or job[2] ~= 'running' then return 0 end
local deadline = now() + tonumber(ARGV[4])
redis.call('ZADD', P .. ':running:' .. ARGV[1], deadline, ARGV[2])
redis.call('HSET', key, 'at', deadline)
return 1
"""

# ack(queue, id, attempt, keep_done) -> 1, or 0 if a later attempt owns the job
ACK_FN = r"""
local function ack(q, id, n, keep)
  local key = P .. ':job:' .. id
  local job = owned(key, n)
  if not job then return 0 end
  detach(q, id, job[2])
  keep = tonumber(keep)
  if keep > 0 then
    redis.call('HSET', key, 'state', 'done', 'at', now())
    redis.call('HDEL', key, 'err')
    redis.call('EXPIRE', key, math.ceil(keep))
  else
    redis.call('DEL', key)
  end
  return 1
end
"""

# ARGV: queue, id, attempt, keep_done
ACK = PRELUDE + ACK_FN + r"""
return ack(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""

# ARGV: queue, id, attempt, keep_done, lease, queue... -> {ack's, claim's}: a
# consumer going on to its next job in one round trip instead of two.
ACK_CLAIM = PRELUDE + ACK_FN + CLAIM_FN + r"""
return {ack(ARGV[1], ARGV[2], ARGV[3], ARGV[4]), claim(tonumber(ARGV[5]), 6)}
"""

# ARGV: queue, id, attempt, traceback, retry_in -> 'delayed' | 'dead' | nil
FAIL = PRELUDE + r"""
local q, id = ARGV[1], ARGV[2]
local key = P .. ':job:' .. id
local job = owned(key, ARGV[3])
if not job then return false end
detach(q, id, job[2])
local t = now()
if tonumber(ARGV[3]) >= tonumber(redis.call('HGET', key, 'max')) then
  redis.call('HSET', key, 'state', 'dead', 'at', t, 'err', ARGV[4])
  redis.call('ZADD', P .. ':dead:' .. q, t, id)
  return 'dead'
end
local at = t + tonumber(ARGV[5])
redis.call('HSET', key, 'state', 'delayed', 'at', at, 'err', ARGV[4])
redis.call('ZADD', P .. ':delayed:' .. q, at, id)
wake(q)
return 'delayed'
"""

# ARGV: id... -> how many dead jobs became ready again
RETRY = PRELUDE + r"""
local t = now()
local n = 0
for i = 1, #ARGV do
  local id = ARGV[i]
  local key = P .. ':job:' .. id
  local q = redis.call('HGET', key, 'q')
  if q and redis.call('ZREM', P .. ':dead:' .. q, id) == 1 then
    redis.call('HSET', key, 'state', 'ready', 'n', 0, 'at', t)
    redis.call('LPUSH', P .. ':ready:' .. q, id)
    wake(q)
    n = n + 1
  end
end
return n
"""

# ARGV: queue, batch -> how many jobs were deleted (call until 0)
PURGE = PRELUDE + r"""
local q, batch = ARGV[1], tonumber(ARGV[2])
local n = 0
local ready = P .. ':ready:' .. q
for _, id in ipairs(redis.call('LRANGE', ready, 0, batch - 1)) do
  redis.call('DEL', P .. ':job:' .. id)
  n = n + 1
end
redis.call('LTRIM', ready, batch, -1)
for _, z in ipairs({P .. ':delayed:' .. q, P .. ':dead:' .. q}) do
  for _, id in ipairs(redis.call('ZRANGE', z, 0, batch - 1)) do
    redis.call('DEL', P .. ':job:' .. id)
    n = n + 1
  end
  redis.call('ZREMRANGEBYRANK', z, 0, batch - 1)
end
return n
"""

# no ARGV -> {{queue, ready, running, delayed, dead}...}; forgets empty queues
STATS = PRELUDE + r"""
local t = now()
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  local delayed = P .. ':delayed:' .. q
  local waiting = redis.call('ZCARD', delayed)
  local due = redis.call('ZCOUNT', delayed, '-inf', t)
  local ready = redis.call('LLEN', P .. ':ready:' .. q)
  local running = redis.call('ZCARD', P .. ':running:' .. q)
  local dead = redis.call('ZCARD', P .. ':dead:' .. q)
  if ready + waiting + running + dead == 0 then
    redis.call('SREM', P .. ':queues', q)
  else
    table.insert(out, {q, ready + due, running, waiting - due, dead})
  end
end
return out
"""
