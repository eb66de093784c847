"""Tenants' recent demand per model, in Redis, shared by every producer and the gateway: what
sets a job's turn in its level queue under the fair policy (scheduler/turns.py).

One Lua script charges a whole batch in one round trip and returns, for each job, its
tenant's demand just before it: a flood's later jobs see the flood's earlier ones, so a
10,000-job batch spreads over the turns instead of all taking the top one."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from genq import names

__all__ = ["DemandCounter"]

# KEYS[1]: the model's demand hash. ARGV: now, horizon, then tenant and cost pairs. A
# tenant's demand decays as exp(-elapsed / horizon) (clocks a little apart: never grows);
# done in Redis so that two producers charging one tenant at once cannot lose a charge.
CHARGE = """
local now, horizon = tonumber(ARGV[1]), tonumber(ARGV[2])
local demand = {}
local before = {}
for i = 3, #ARGV, 2 do
  local tenant, cost = ARGV[i], tonumber(ARGV[i + 1])
  local d = demand[tenant]
  if d == nil then
    d = 0
    local raw = redis.call('HGET', KEYS[1], tenant)
    if raw then
      local value, at = string.match(raw, '^(%S+) (%S+)$')
      d = tonumber(value) * math.exp(-math.max(0, now - tonumber(at)) / horizon)
    end
  end
  before[#before + 1] = tostring(d)
  demand[tenant] = d + cost
end
for tenant, d in pairs(demand) do
  redis.call('HSET', KEYS[1], tenant, string.format('%.17g %.17g', d, now))
end
-- Forgotten after ten horizons without a charge: by then it has decayed to nothing.
redis.call('EXPIRE', KEYS[1], math.ceil(horizon * 10))
return before
"""


class DemandCounter:
    def __init__(self, client: redis.Redis, *, horizon: float) -> None:
        self._charge = client.register_script(CHARGE)
        self._horizon = horizon

    def charge(self, model: str, charges: Sequence[tuple[str, float]], now: float
               ) -> list[float]:
        """Add each (tenant, tokens) in order; return each one's tenant demand before it."""
        if not charges:
            return []
        argv: list[str | float] = [now, self._horizon]
        for tenant, cost in charges:
            argv += [tenant, cost]
        return [float(d) for d in self._charge(keys=[names.demand_key(model)], args=argv)]
