"""Relaying streaming jobs: their text as the workers publish it, then their records.

A streaming job's worker appends its text to a Redis Stream (`names.progress_key`, written
by workers/progress.py); the gateway's one stream reader (streams.py) reads every open
response's streams with one XREAD, and this yields each new piece of a response's jobs.
The record stays the source of truth: when a job ends, whatever its stream did not deliver
(all of it, for a cached result or a single-flight follower, which run nowhere; the tail, if
the stream was trimmed) comes from the record's text.

Offsets make this safe against repeats: each piece carries its character offset in the
whole text, and only what lies past the text already relayed is sent. A job rerun after its
worker died streams again from offset 0; a deterministic rerun repeats the same text and
nothing is sent twice. A sampled rerun may diverge from what was sent: then relaying stops
for that choice, and its rest comes from the record at the end, if the record still
continues what was sent (it may not: the client was sent the start of an attempt that lost;
that is logged).

A job ends with an `end: ok` entry just before its record is stored: the record is then
awaited through the Waiter's result subscription. Jobs that end without one (failed,
cancelled, cached, followers) are noticed by reading the records whenever nothing new came
for `_IDLE` seconds. Redis failing meanwhile is waited out up to the deadline: the response
has started, so the client hears of it only if it lasts."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.exceptions import RedisError

from genq import names
from genq.protocol import PROGRESS_END, PROGRESS_END_OK, PROGRESS_OFFSET, PROGRESS_TEXT
from genq.schema import JobRecord
from producers.gateway.streams import StreamHub
from producers.gateway.waiter import Waiter

__all__ = ["Ended", "Piece", "relay"]

log = logging.getLogger(__name__)

# How long nothing new may come before the records are read again: the latency with which
# a job that ended without an `end` entry (a follower, a failure) is noticed.
_IDLE = 1.0
# After an `end: ok` entry the record is stored within a round trip; wait this long at most.
_END_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class Ended:
    index: int
    record: JobRecord


class _Choice:
    def __init__(self, index: int, job_id: str) -> None:
        self.index = index
        self.job_id = job_id
        self.key = names.progress_key(job_id)
        self.sent = ""
        self.diverged = False

    def take(self, offset: int, text: str) -> str:
        """What of the piece at `offset` is new, or "" (a repeat, a gap, or divergence)."""
        if self.diverged:
            return ""
        end = offset + len(text)
        overlap = self.sent[offset:end]
        if offset > len(self.sent) or not text.startswith(overlap):
            # A gap (the stream's head was trimmed) or a rerun that sampled other text:
            # the rest of this choice comes from the record.
            self.diverged = True
            return ""
        new = text[len(overlap) :]
        self.sent += new
        return new

    def rest(self, record: JobRecord) -> str:
        text = record.text or ""
        if not text.startswith(self.sent):
            log.warning(
                "job %s: the streamed text is not a prefix of its result (a sampled "
                "job rerun after it began streaming)",
                self.job_id,
            )
            return ""
        return text[len(self.sent) :]


async def relay(
    hub: StreamHub, waiter: Waiter, job_ids: list[str], *, deadline: float
) -> AsyncIterator[Piece | Ended]:
    """Pieces of text as the jobs produce them, and each job's record once it ended (after
    its last piece). Ends when every job has ended; `TimeoutError` past `deadline` (a
    `time.monotonic()` value). Nothing here waits long, so the deadline is kept to within a
    round trip, without timing out the consumer's own awaits between pieces."""
    pending = {c.key: c for c in (_Choice(i, job_id) for i, job_id in enumerate(job_ids))}
    tap = hub.open(list(pending))
    try:
        check = True
        while pending:
            if check:
                try:
                    ended = await _ended(waiter, list(pending.values()))
                except RedisError as exc:
                    log.warning("relay: reading records failed (%s); retrying", exc)
                    ended = []
                for choice, record in ended:
                    rest = choice.rest(record) if record.text else ""
                    if rest:
                        yield Piece(choice.index, rest)
                    del pending[choice.key]
                    hub.close(tap, [choice.key])
                    yield Ended(choice.index, record)
                if not pending:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            reply = await tap.take(min(_IDLE, left))
            check = not reply
            ending: list[str] = []
            for key, entries in reply:
                reading = pending.get(key)
                if reading is None:
                    continue
                for _entry_id, fields in entries:
                    if PROGRESS_END in fields:
                        # ok: the record is being stored. error: that attempt gave nothing;
                        # the record says whether the job failed or another attempt follows.
                        if fields[PROGRESS_END] == PROGRESS_END_OK:
                            ending.append(reading.job_id)
                        check = True
                        continue
                    new = reading.take(int(fields[PROGRESS_OFFSET]), fields[PROGRESS_TEXT])
                    if new:
                        yield Piece(reading.index, new)
            if ending:
                try:
                    await waiter.wait(ending, timeout=min(_END_WAIT, max(0.0, left)))
                except RedisError as exc:
                    log.warning("relay: waiting for records failed (%s); retrying", exc)
    finally:
        hub.close(tap)


async def _ended(waiter: Waiter, choices: list[_Choice]) -> list[tuple[_Choice, JobRecord]]:
    records = await waiter.read([c.job_id for c in choices])
    return [(c, r) for c, r in zip(choices, records, strict=True) if r.done]
