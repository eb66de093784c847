-- SUBMIT: create a cacheable job's record, and answer it from the cache, or make it a
-- follower of an identical job, or the leader of a new flight (see flight.lua).
-- KEYS: job, cache_entry, flight, celery_result, cache_stats
-- ARGV: prefixes[6], job_id, ttl, now, date_done, fields[...]
-- fields: field/value pairs of the new record (with cache_key and priority).
-- Returns {outcome, leader}: 'hit' (the record is created succeeded, cached, with the stored
-- result), 'follower' (of leader: publish nothing) or 'leader' (publish it).
-- A queued leader less urgent than the newcomer is not followed: the newcomer would wait at
-- the leader's level, behind work it outranks. It leads the flight from then on instead (the
-- old leader keeps the followers it has).
local job_key, entry_key, flight_key, stats_key = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
local job_id, ttl, now, date_done = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local FIELDS = 11  -- ARGV index of the first field/value pair

local hit = redis.call('HMGET', entry_key, 'text', 'finish_reason', 'usage', 'result')
redis.call('HSET', job_key, unpack(ARGV, FIELDS))
redis.call('EXPIRE', job_key, ttl)
if hit[4] then
  redis.call('HSET', job_key, 'state', 'succeeded', 'cached', '1', 'text', hit[1] or '',
             'finish_reason', hit[2] or '', 'usage', hit[3] or '', 'finished_at', now)
  store_meta(job_id, meta(job_id, 'SUCCESS', hit[4], date_done), ttl)
  redis.call('HINCRBY', stats_key, 'hits', 1)
  return {'hit', ''}
end
local leader = redis.call('GET', flight_key)
if leader then
  local l = redis.call('HMGET', P.job .. leader, 'state', 'priority')
  local mine = tonumber(redis.call('HGET', job_key, 'priority')) or 0
  if l[1] == 'running' or (l[1] == 'queued' and mine <= (tonumber(l[2]) or 0)) then
    redis.call('HSET', job_key, 'leader', leader)
    redis.call('RPUSH', P.followers .. leader, job_id)
    redis.call('EXPIRE', P.followers .. leader, ttl)
    redis.call('HINCRBY', stats_key, 'followers', 1)
    return {'follower', leader}
  end
end
redis.call('SET', flight_key, job_id, 'EX', ttl)
redis.call('HINCRBY', stats_key, 'misses', 1)
return {'leader', ''}
