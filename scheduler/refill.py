"""Waiting for a level's window to refill before admitting worse work.

A worker sees only `window` jobs per level (its RabbitMQ prefetch). When several engine
slots free at once, admitting the best held jobs can empty a level's window while that
level's queue still has jobs: their replacements arrive only after RabbitMQ has the acks.
Filling the remaining slots from lower levels at that moment lets them pass better jobs
that were a round trip away (measured: tens of thousands of overtakings past the bound in
one `genq bench --priority` run). So a job is not admitted while a level that may be about to
deliver something better has a refill on its way; a refill that does not come within `wait`
seconds means that queue is empty, and admission goes on.

"Better" needs no look at the queue: a level's queue is FIFO, so what it delivers next was
enqueued after what it delivered last, and its key (α·p − β·t) is at most the last one's.
(A republished job keeps its old enqueue time and may be better still, and under the fair
policy's tenant turns a queue is FIFO only within a turn (scheduler/turns.py); the wait
bounds those cases too.)"""

from __future__ import annotations

from collections import deque

__all__ = ["RefillWatch"]


class RefillWatch:
    def __init__(self, wait: float) -> None:
        if not wait >= 0:
            raise ValueError(f"refill wait: must be >= 0 seconds, not {wait!r}")
        self._wait = wait
        self._due: dict[int, deque[float]] = {}  # level -> deadlines of awaited deliveries
        self._last_key: dict[int, float] = {}  # level -> key of its latest delivery

    def delivered(self, level: int, key: float) -> None:
        """A job arrived from `level`'s queue: one awaited refill (if any) has come."""
        due = self._due.get(level)
        if due:
            due.popleft()
        self._last_key[level] = key

    def taken(self, level: int, now: float) -> None:
        """A held job of `level` is being admitted: its window slot will refill."""
        self._due.setdefault(level, deque()).append(now + self._wait)

    def given_back(self, level: int, key: float) -> None:
        """A held job went back to its queue's head: that queue may deliver it again, so
        its next delivery can be as good as this."""
        self._last_key[level] = max(key, self._last_key.get(level, float("-inf")))

    def expect(self, level: int, count: int, now: float) -> None:
        """Consuming (re)starts: up to `count` deliveries may come from `level`. Only levels
        that delivered before are waited for; of the others nothing is known to wait for."""
        if level in self._last_key:
            self._due[level] = deque([now + self._wait] * count)

    def held_back(self, key: float, now: float) -> float | None:
        """None if a job with `key` may be admitted now; else the time to look again (the
        earliest deadline of a refill that could bring a better job)."""
        earliest: float | None = None
        for level, due in self._due.items():
            while due and due[0] <= now:
                due.popleft()  # not coming: that queue ran dry
            if due and self._last_key.get(level, float("-inf")) > key:
                earliest = due[0] if earliest is None else min(earliest, due[0])
        return earliest
