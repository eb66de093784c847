-- CHARGE: add each tenant's cost to its recent demand for a model, in order, and return each
-- one's tenant demand just before it.
-- KEYS: demand
-- ARGV: now, horizon, charges[...]
-- demand: the model's demand hash (names.demand_key); charges: tenant/cost pairs.
-- A tenant's demand decays as exp(-elapsed / horizon) (clocks a little apart: never grows);
-- done in Redis so that two producers charging one tenant at once cannot lose a charge.
local demand_key = KEYS[1]
local now, horizon = tonumber(ARGV[1]), tonumber(ARGV[2])
local CHARGES = 3  -- ARGV index of the first tenant/cost pair

local demand = {}
local before = {}
for i = CHARGES, #ARGV, 2 do
  local tenant, cost = ARGV[i], tonumber(ARGV[i + 1])
  local d = demand[tenant]
  if d == nil then
    d = 0
    local raw = redis.call('HGET', demand_key, tenant)
    if raw then
      local value, at = string.match(raw, '^(%S+) (%S+)$')
      d = tonumber(value) * math.exp(-math.max(0, now - tonumber(at)) / horizon)
    end
  end
  before[#before + 1] = tostring(d)
  demand[tenant] = d + cost
end
for tenant, d in pairs(demand) do
  redis.call('HSET', demand_key, tenant, string.format('%.17g %.17g', d, now))
end
-- Forgotten after ten horizons without a charge: by then it has decayed to nothing.
redis.call('EXPIRE', demand_key, math.ceil(horizon * 10))
return before
