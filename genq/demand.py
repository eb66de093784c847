"""Tenants' recent demand per model, in Redis, shared by every producer and the gateway: what
sets a job's turn in its level queue under the fair policy (scheduler/turns.py).

One Lua script charges a whole batch in one round trip and returns, for each job, its
tenant's demand just before it: a flood's later jobs see the flood's earlier ones, so a
10,000-job batch spreads over the turns instead of all taking the top one."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import redis

from genq import names

__all__ = ["DemandCounter"]

# The script (demand.lua) names its KEYS and ARGV in its header; `charge_args` builds them.
CHARGE = resources.files("genq").joinpath("demand.lua").read_text(encoding="utf-8")


def charge_args(
    *, now: float, horizon: float, charges: Sequence[tuple[str, float]]
) -> list[str | float]:
    """CHARGE's ARGV, in demand.lua's order."""
    return [now, horizon, *(item for pair in charges for item in pair)]


class DemandCounter:
    def __init__(self, client: redis.Redis, *, horizon: float) -> None:
        self._charge = client.register_script(CHARGE)
        self._horizon = horizon

    def charge(self, model: str, charges: Sequence[tuple[str, float]], now: float) -> list[float]:
        """Add each (tenant, tokens) in order; return each one's tenant demand before it."""
        if not charges:
            return []
        argv = charge_args(now=now, horizon=self._horizon, charges=charges)
        return [float(d) for d in self._charge(keys=[names.demand_key(model)], args=argv)]
