-- REVIVE: a failed job goes back to queued for another try (`genq dead requeue`): its error,
-- end time, attempts and Celery result are cleared. The caller republishes its message.
-- KEYS: job, celery_result
-- ARGV: none
-- Returns 'queued', or the state the job had ('missing': none).
local job_key, result_key = KEYS[1], KEYS[2]

local s = redis.call('HGET', job_key, 'state')
if s ~= 'failed' then return s or 'missing' end
redis.call('HSET', job_key, 'state', 'queued', 'attempts', '0', 'worker', '')
redis.call('HDEL', job_key, 'error', 'finished_at', 'started_at')
redis.call('DEL', result_key)
return 'queued'
