-- HANDBACK: a worker gives an admitted job back (shutdown, a passing error). The job turns
-- `queued` and keeps a short lease until its republished message is confirmed (see RELEASE),
-- so a worker dying in between leaves an expiring lease for the reaper, never a queued job
-- with no message.
-- KEYS: job, leases
-- ARGV: job_id, lease
-- Returns 'queued', or the state the job had ('missing': none).
local job_key, leases_key = KEYS[1], KEYS[2]
local job_id, lease = ARGV[1], ARGV[2]

local s = redis.call('HGET', job_key, 'state')
if s ~= 'running' then return s or 'missing' end
redis.call('HSET', job_key, 'state', 'queued', 'worker', '')
redis.call('ZADD', leases_key, lease, job_id)
return 'queued'
