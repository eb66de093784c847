-- The result cache and single flight: a library, not a script. It is prepended to SUBMIT,
-- ABANDON, FINISH and CANCEL, whose first six ARGV are the key prefixes it builds other jobs'
-- keys from (SCRIPT_PREFIXES in genq/store/scripts.py).
--
-- A cacheable job (a deterministic request, see genq/cache.py) carries `cache_key` in its
-- record. SUBMIT answers it from a stored result, or makes it a follower of an identical job
-- already queued or running (the flight's leader: no message is published for a follower),
-- or makes it the leader of a new flight. When a leader ends, FINISH (or CANCEL) settles its
-- flight in the same script, so no follower is ever left queued with neither a leader nor a
-- message:
-- - succeeded: the result is stored (cache_ttl, cache_max_bytes from the record) and every
--   follower still queued gets it (state succeeded, cached), with its own Celery result;
-- - failed: every follower fails with the leader's error. The same request fails the same
--   way (a prompt too long for the context; an engine error met max_attempts times), so
--   running it again for each follower would only repeat the failure;
-- - cancelled or expired: that was the leader's own business, not its followers'. The first
--   follower still queued is promoted: it becomes the leader of the others and is given a
--   lease in genq:leases with the expiry the caller passed. The caller publishes its message
--   and releases the lease (RELEASE); if it dies first, the lease expires and a worker's
--   reaper republishes the job, as for any job whose worker died.
-- Cancelling a follower cancels only that follower.
--
-- Reaching other jobs' keys by prefix is fine on one Redis, which is what genq's job store
-- is (a Redis Cluster would need the flight's keys in one hash slot).

local P = {job = ARGV[1], celery = ARGV[2], cache = ARGV[3], flight = ARGV[4],
           followers = ARGV[5], leases = ARGV[6]}

-- What Celery's Redis result backend stores, for a job ID of our own: the same JSON value as
-- celery_meta in genq/store/results.py builds (tests/unit/test_store_results.py pins them
-- equal). `payload` is JSON already.
local function meta(id, status, payload, date)
  return '{"status": "' .. status .. '", "result": ' .. payload ..
         ', "traceback": null, "children": [], "date_done": ' .. cjson.encode(date) ..
         ', "task_id": ' .. cjson.encode(id) .. '}'
end

local function store_meta(id, value, ttl)
  redis.call('SET', P.celery .. id, value, 'EX', ttl)
  redis.call('PUBLISH', P.celery .. id, value)
end

-- Job `id` just ended in `state`: hand its flight on. Returns the promoted follower's ID, or
-- false. `result` is the Celery result JSON of a success.
local function settle(id, state, now, date, ttl, lease, result)
  local f = redis.call('HMGET', P.job .. id, 'cache_key', 'leader', 'cache_ttl',
                       'cache_max_bytes', 'text', 'finish_reason', 'usage', 'error')
  if f[2] and f[2] ~= '' then  -- a follower: it leaves its leader's list, nothing more
    redis.call('LREM', P.followers .. f[2], 0, id)
    return false
  end
  if not f[1] or f[1] == '' then return false end
  local list = P.followers .. id
  local flight = P.flight .. f[1]
  if state == 'succeeded' then
    local text, reason, usage = f[5] or '', f[6] or '', f[7] or ''
    if result == '' then result = 'null' end
    local cache_ttl = tonumber(f[3]) or 0
    if cache_ttl > 0 and #result <= (tonumber(f[4]) or 0) then
      local entry = P.cache .. f[1]
      redis.call('HSET', entry, 'text', text, 'finish_reason', reason, 'usage', usage,
                 'result', result)
      redis.call('EXPIRE', entry, cache_ttl)
    end
    for _, fid in ipairs(redis.call('LRANGE', list, 0, -1)) do
      if redis.call('HGET', P.job .. fid, 'state') == 'queued' then
        redis.call('HSET', P.job .. fid, 'state', 'succeeded', 'cached', '1', 'text', text,
                   'finish_reason', reason, 'usage', usage, 'finished_at', now)
        redis.call('EXPIRE', P.job .. fid, ttl)
        store_meta(fid, meta(fid, 'SUCCESS', result, date), ttl)
      end
    end
  elseif state == 'failed' then
    local err = 'identical job ' .. id .. ' failed: ' .. (f[8] or 'failed')
    local payload = '{"exc_type": "JobFailedError", "exc_message": [' .. cjson.encode(err) ..
                    '], "exc_module": "genq.errors"}'
    for _, fid in ipairs(redis.call('LRANGE', list, 0, -1)) do
      if redis.call('HGET', P.job .. fid, 'state') == 'queued' then
        redis.call('HSET', P.job .. fid, 'state', 'failed', 'error', err, 'finished_at', now)
        redis.call('EXPIRE', P.job .. fid, ttl)
        store_meta(fid, meta(fid, 'FAILURE', payload, date), ttl)
      end
    end
  else  -- cancelled or expired
    local promoted = false
    while not promoted do
      local fid = redis.call('LPOP', list)
      if not fid then break end
      if redis.call('HGET', P.job .. fid, 'state') == 'queued' then promoted = fid end
    end
    if promoted then
      redis.call('HSET', P.job .. promoted, 'leader', '')
      redis.call('ZADD', P.leases, lease, promoted)
      local rest = redis.call('LRANGE', list, 0, -1)
      if #rest > 0 then
        redis.call('RENAME', list, P.followers .. promoted)
        for _, fid in ipairs(rest) do
          if redis.call('HGET', P.job .. fid, 'state') == 'queued' then
            redis.call('HSET', P.job .. fid, 'leader', promoted)
          end
        end
      end
      -- A flight taken over by a more urgent leader (see SUBMIT) stays with that one.
      if redis.call('GET', flight) == id then
        redis.call('SET', flight, promoted, 'EX', ttl)
      end
      return promoted
    end
  end
  redis.call('DEL', list)
  if redis.call('GET', flight) == id then redis.call('DEL', flight) end
  return false
end

