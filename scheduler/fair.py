"""The `fair` policy: score order, with per-tenant fairness inside a band of the best score.

VTC (Sheng et al., "Fairness in Serving Large Language Models", OSDI'24) keeps a virtual
counter c_t of the service each tenant t received (tokens divided by the tenant's weight)
and always serves the tenant with the smallest counter. Pure VTC ignores priority; pure
score order ignores tenants. The fair policy combines them with one number, the band F
(in priority levels):

    k* = the best static key held (k = α·p − β·t_enqueued, see `scheduler.score`)
    eligible = the tenants whose best job has k ≥ k* − α·F
    admit the best job of the eligible tenant with the smallest counter
    (ties: the better key, then the older job)

Within a tenant jobs go in score order; across tenants, fairness decides among jobs whose
scores are within F levels of each other and score decides beyond that.

What it guarantees, for one worker and what it holds:

- Priority. The admitted job j has score_j(now) ≥ score_i(now) − α·F for every held job i.
  So no job i is overtaken by a job j that arrived more than (α/β)·(p_j − p_i + F) seconds
  after it: the `score` policy's starvation bound plus F·α/β seconds, i.e.
  `overtakings_past_bound(starts, alpha, beta, slack=F*alpha/beta) == 0`. With F = 0 this is
  the score policy, fairness only breaking ties.
- Fairness. While tenants hold candidates inside the band, each admission goes to the
  least-served of them, so once their counters are within U of each other (U the largest
  single charge) they stay so, and the service charged to any two of them over an interval
  differs by at most 2U (VTC's bound). Output charged only when a job finishes lags by what
  is in flight: with C engine slots, U_p the largest admission charge and U_o the largest
  output of a job, the counters stay within B = U_p + C·U_o, and over an interval the
  service differs by at most 2B plus what its edges let in (the last admission's prompt and
  the outputs that ended just before the first): 2B + U_p + C·U_o.
- No banked credit. A tenant that starts holding candidates again has its counter lifted to
  the smallest counter among tenants holding candidates (to the last one to leave if none
  do), as VTC does: idling earns nothing. A tenant new to the worker, its job inside the
  band, is admitted before any other tenant is admitted twice (all charges > 0).
- Beyond the band, fairness does not reach: a tenant whose best job scores more than F levels
  below the best waits in score order. That is the price of the first guarantee.

Cost: add and remove O(log n); peek and pop O(T + log n), T the tenants holding candidates
(bounded by the worker's window, so a scan beats an index here)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from scheduler.candidate import Candidate
from scheduler.heap import KeyedHeap
from scheduler.score import static_key

__all__ = ["DEFAULT_FAIR_LEVELS", "FairQueue"]

# Two levels: with α = 1, β = 1/30 that lets fairness reorder same-level jobs that arrived
# within a minute of each other, and put an under-served tenant's level-7 job before an
# over-served tenant's level-9 job of the same age, while stretching the starvation bound
# by only 60 s (the full 0→9 bound is 270 s). Wider bands buy fairness under a deeper flood
# at the cost of weaker priority; F = 0 is the score policy.
DEFAULT_FAIR_LEVELS = 2.0


class FairQueue:
    """The `fair` admission queue. See the module docstring for the rule and its bounds."""

    def __init__(
        self,
        *,
        alpha: float,
        beta: float,
        fair_levels: float = DEFAULT_FAIR_LEVELS,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        if not (fair_levels >= 0 and math.isfinite(fair_levels)):
            raise ValueError(f"fair_levels: must be finite and >= 0, not {fair_levels!r}")
        self._weights = dict(weights or {})
        for tenant, weight in self._weights.items():
            if not (weight > 0 and math.isfinite(weight)):
                raise ValueError(f"fair_weights[{tenant!r}]: must be finite and > 0")
        self._alpha = alpha
        self._beta = beta
        self._band = alpha * fair_levels  # in key units
        self._heaps: dict[str, KeyedHeap] = {}  # only tenants holding candidates
        self._tenant_of: dict[str, str] = {}  # job ID -> tenant
        self._counters: dict[str, float] = {}
        self._last_left: str | None = None

    def _key(self, candidate: Candidate[Any]) -> float:
        return static_key(
            candidate.priority, candidate.enqueued_at, alpha=self._alpha, beta=self._beta
        )

    def counter(self, tenant: str) -> float:
        """The tenant's virtual counter: service received, in tokens divided by its weight."""
        return self._counters.get(tenant, 0.0)

    def charge(self, tenant: str, tokens: float) -> None:
        """Record service the tenant received beyond a candidate's `cost` (output tokens, as
        they are produced or when the job ends). A negative amount refunds a charge, e.g. for
        a job popped but then found expired or cancelled."""
        self._counters[tenant] = self.counter(tenant) + tokens / self._weights.get(tenant, 1.0)

    def add(self, candidate: Candidate[Any]) -> None:
        if candidate.job_id in self._tenant_of:
            return  # a redelivered copy of a job already held: one is enough
        heap = self._heaps.get(candidate.tenant)
        if heap is None:
            self._lift(candidate.tenant)
            heap = self._heaps[candidate.tenant] = KeyedHeap(self._key)
        heap.add(candidate)
        self._tenant_of[candidate.job_id] = candidate.tenant

    def _lift(self, tenant: str) -> None:
        """A tenant starts holding candidates: it may not bring credit saved while idle."""
        if self._heaps:
            floor = min(self._counters[t] for t in self._heaps)
        elif self._last_left is not None:
            floor = self._counters[self._last_left]
        else:
            floor = 0.0
        self._counters[tenant] = max(self.counter(tenant), floor)

    def _choose(self) -> str:
        if not self._heaps:
            raise IndexError("admission queue is empty")
        tops = {tenant: heap.top_key() for tenant, heap in self._heaps.items()}
        threshold = max(tops.values()) - self._band
        return min(
            (t for t, k in tops.items() if k >= threshold),
            key=lambda t: (self._counters[t], -tops[t], self._heaps[t].peek().enqueued_at, t),
        )

    def peek(self) -> Candidate[Any]:
        return self._heaps[self._choose()].peek()

    def pop(self) -> Candidate[Any]:
        tenant = self._choose()
        candidate = self._heaps[tenant].pop()
        self._forget(candidate.job_id, tenant)
        # Charged at admission, not at the end: a worker fills several engine slots in one
        # round, and only a counter that moves with each pop spreads them across tenants.
        self.charge(tenant, candidate.cost)
        return candidate

    def remove(self, job_id: str) -> Candidate[Any] | None:
        tenant = self._tenant_of.get(job_id)
        if tenant is None:
            return None
        candidate = self._heaps[tenant].remove(job_id)
        self._forget(job_id, tenant)
        return candidate

    def _forget(self, job_id: str, tenant: str) -> None:
        del self._tenant_of[job_id]
        if not self._heaps[tenant]:
            del self._heaps[tenant]
            self._last_left = tenant

    def __len__(self) -> int:
        return len(self._tenant_of)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._tenant_of
