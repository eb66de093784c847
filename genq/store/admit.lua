-- ADMIT: a worker takes a job delivered to it, under a lease it keeps renewing.
-- KEYS: job, leases
-- ARGV: job_id, now, worker, lease_expiry
-- Returns what the caller must do: 'running' (run it), 'leased' (a live worker runs it: drop
-- this copy), 'expired' (deadline passed: record it with FINISH), 'missing', or a terminal
-- state.
local job_key, leases_key = KEYS[1], KEYS[2]
local job_id, now, worker, lease_expiry = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local s = redis.call('HGET', job_key, 'state')
if not s then return 'missing' end
local t = tonumber(now)
if s == 'running' then
  local lease = redis.call('ZSCORE', leases_key, job_id)
  if lease and tonumber(lease) > t then return 'leased' end
elseif s ~= 'queued' then
  return s
else
  local d = redis.call('HGET', job_key, 'deadline_at')
  if d and d ~= '' and tonumber(d) < t then return 'expired' end
end
redis.call('HSET', job_key, 'state', 'running', 'started_at', now, 'worker', worker)
redis.call('HINCRBY', job_key, 'attempts', 1)
redis.call('ZADD', leases_key, lease_expiry, job_id)
return 'running'
