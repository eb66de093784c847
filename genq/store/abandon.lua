-- ABANDON: a job whose message the broker never confirmed. The record goes; a leader's
-- followers fail with the error (the broker is in trouble: publishing one of them would fail
-- as well).
-- KEYS: job
-- ARGV: prefixes[6], job_id, now, ttl, date_done, error
-- Returns 'ok' or 'missing'.
local job_key = KEYS[1]
local job_id, now, ttl, date_done, error = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]

if redis.call('EXISTS', job_key) == 0 then return 'missing' end
redis.call('HSET', job_key, 'error', error)
settle(job_id, 'failed', now, date_done, ttl, now, '')
redis.call('DEL', job_key)
return 'ok'
