"""The result cache's key: which requests are the same request.

Two requests share a stored result, and a single flight while one runs, when the engine
would give them the same text: the same model, the same prompt or chat messages and the
same sampling parameters, for a deterministic request (greedy, or sampled with a fixed
seed). Who asks, how urgently and by when (tenant, priority, deadline, idempotency key)
don't change the text, so they are not part of the key.

The store's side (stored results, flights, followers, counters) is in genq/store.py."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from genq.schema import JobSpec

__all__ = ["CacheStats", "cache_key"]

# Part of every key: bump it when what goes into a key changes, so an old entry is never
# served for a request it no longer matches.
_KEY_VERSION = 1


def cache_key(spec: JobSpec) -> str | None:
    """The sha256 of the request's canonical JSON, or None if it must not be cached: not
    deterministic, or `cache: false`. `max_tokens` should be resolved first (the client
    fills in its default), so an explicit default and an omitted one share an entry."""
    if not spec.cache or not spec.deterministic:
        return None
    data: dict[str, Any] = {
        "v": _KEY_VERSION,
        "model": spec.model,
        "max_tokens": spec.max_tokens,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        # Stop strings act as a set: generation ends at the first one met, whichever it is.
        "stop": sorted(set(spec.stop)),
        "seed": spec.seed,
        "ignore_eos": spec.ignore_eos,
    }
    if spec.prompt is not None:
        data["prompt"] = spec.prompt
    else:
        data["messages"] = [[m.role, m.content] for m in spec.messages or ()]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the store's counters were last reset, for every producer."""

    hits: int
    """Requests answered from a stored result at submit."""
    misses: int
    """Cacheable requests that ran in the engine (each a single flight's leader)."""
    followers: int
    """Requests that joined an identical one already queued or running."""

    @property
    def lookups(self) -> int:
        return self.hits + self.misses + self.followers

    @property
    def hit_rate(self) -> float:
        """Share of cacheable requests that did not run in the engine."""
        return (self.hits + self.followers) / self.lookups if self.lookups else 0.0
