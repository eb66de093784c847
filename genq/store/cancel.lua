-- CANCEL: a queued job is cancelled on the spot; a running one is asked to stop (its worker
-- aborts it in the engine and records `cancelled`).
-- KEYS: job, celery_result
-- ARGV: prefixes[6], job_id, now, ttl, celery_meta, cancel_channel, date_done, promote_lease
-- celery_meta: the Celery result value of a revoked task; cancel_channel: where running jobs'
-- workers listen; promote_lease: the lease expiry for a promoted follower.
-- Returns {outcome, promoted follower or ''}: outcome 'cancelled', 'cancelling', 'missing', or
-- the state the job already had.
local job_key, result_key = KEYS[1], KEYS[2]
local job_id, now, ttl, celery_meta, cancel_channel, date_done, promote_lease =
  ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]

local s = redis.call('HGET', job_key, 'state')
if not s then return {'missing', ''} end
if s == 'queued' then
  redis.call('HSET', job_key, 'state', 'cancelled', 'finished_at', now,
             'error', 'cancelled by the client')
  redis.call('EXPIRE', job_key, ttl)
  redis.call('SET', result_key, celery_meta, 'EX', ttl)
  redis.call('PUBLISH', result_key, celery_meta)
  return {'cancelled',
          settle(job_id, 'cancelled', now, date_done, ttl, promote_lease, '') or ''}
end
if s == 'running' then
  redis.call('HSET', job_key, 'cancel_requested', '1')
  redis.call('PUBLISH', cancel_channel, job_id)
  return {'cancelling', ''}
end
return {s, ''}
