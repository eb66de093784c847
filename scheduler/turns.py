"""Tenant turns inside a level queue: how the fleet keeps one tenant's flood from starving
the others, before any worker sees the jobs.

A level's queue is consumed by every worker, but each worker holds only `window` of its
jobs, so the fair policy's counters (scheduler/fair.py) can only pick among what reached the
windows. With a FIFO queue that is the flood: a tenant that queued 10,000 jobs at level 5
sits in front of every other tenant's level-5 job, fleet-wide, until it drains.

So under the `fair` policy each job is published with an in-queue priority, its *turn*,
from its tenant's recent demand: the expected tokens (`expected_tokens`) the tenant
submitted for the model, decaying as exp(−elapsed/horizon) (idle tenants are forgiven;
a flood that goes on stays heavy). The demand before the job, in quanta of `quantum`
tokens, sets the turn: the top turn under one quantum, one turn lower per doubling
(log-scaled: eight turns cover 127 quanta and beyond). RabbitMQ delivers a level queue's
higher turns first and keeps FIFO within a turn, so a light tenant's job waits behind at
most the flood's first jobs of the same turn, not behind all of it; the workers' VTC then
puts it before the flood's held jobs. The counters live in Redis (genq/demand.py), one per
model and tenant, shared by every producer and the gateway.

Jobs a worker hands back or republishes (their tenant was charged when they were first
submitted, and they keep their enqueue time) go back at the top turn under every policy:
they are older than nearly everything queued behind them."""

from __future__ import annotations

import math

__all__ = ["expected_tokens", "turn"]


def expected_tokens(prompt_chars: int, max_tokens: int | None) -> float:
    """What a job will cost its tenant, known before it runs: ~4 characters a token, plus
    its max_tokens. The worker's fair policy charges the same at admission (so one batch
    can't all go to one tenant) and trues it up with the real counts when the job ends."""
    return prompt_chars / 4 + (max_tokens or 0)


def turn(demand_before: float, quantum: float, top: int) -> int:
    """The turn, in 0..top, of a job whose tenant's demand before it was `demand_before`
    tokens (`top` is the queues' highest in-queue priority: genq/topology.py)."""
    doublings = int(math.log2(1.0 + max(0.0, demand_before) / quantum))
    return top - min(top, doublings)
