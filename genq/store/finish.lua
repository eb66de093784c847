-- FINISH: store a job's terminal state and result, and settle its flight (see flight.lua).
-- A terminal job is left as it is: the first result wins.
-- KEYS: job, leases, celery_result
-- ARGV: prefixes[6], job_id, ttl, celery_meta, now, date_done, result_json, promote_lease, fields[...]
-- celery_meta: the Celery result value to store; result_json: the result as JSON ('' unless
-- succeeded), for the cache and the followers; promote_lease: the lease expiry for a
-- promoted follower; fields: field/value pairs to set on the record (including 'state').
-- Returns 'ok', 'promoted' (a follower now leads the flight: publish it), 'missing', or the
-- state the job already had.
local job_key, leases_key, result_key = KEYS[1], KEYS[2], KEYS[3]
local job_id, ttl, celery_meta, now, date_done, result_json, promote_lease =
  ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local FIELDS = 14  -- ARGV index of the first field/value pair

local s = redis.call('HGET', job_key, 'state')
redis.call('ZREM', leases_key, job_id)
if not s then return 'missing' end
if s ~= 'queued' and s ~= 'running' then return s end
redis.call('HSET', job_key, unpack(ARGV, FIELDS))
redis.call('EXPIRE', job_key, ttl)
redis.call('SET', result_key, celery_meta, 'EX', ttl)
redis.call('PUBLISH', result_key, celery_meta)
local state = redis.call('HGET', job_key, 'state')
if settle(job_id, state, now, date_done, ttl, promote_lease, result_json) then
  return 'promoted'
end
return 'ok'
