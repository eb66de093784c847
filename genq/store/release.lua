-- RELEASE: after a republish is confirmed, drop the lease if nobody took the job meanwhile
-- (a worker that admitted the new copy holds a new lease, which stays). A running job whose
-- lease expired (its worker died) turns `queued`, ready for its republished copy.
-- KEYS: job, leases
-- ARGV: job_id, lease
-- lease: the lease score the caller saw. Returns 'released' or 'taken'.
local job_key, leases_key = KEYS[1], KEYS[2]
local job_id, lease = ARGV[1], ARGV[2]

local held = redis.call('ZSCORE', leases_key, job_id)
if (not held) or tonumber(held) ~= tonumber(lease) then return 'taken' end
redis.call('ZREM', leases_key, job_id)
local s = redis.call('HGET', job_key, 'state')
if s == 'running' then redis.call('HSET', job_key, 'state', 'queued', 'worker', '') end
return 'released'
