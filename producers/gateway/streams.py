"""Reading every open stream's progress with one XREAD, on one connection.

A streaming job's worker appends its text to a Redis Stream (`names.progress_key`). A
blocking XREAD per open response would hold a connection each: hundreds of streams would
need hundreds of connections. Instead one reader task per gateway process keeps a single
XREAD BLOCK out on its own connection, over the keys of every open stream plus this
gateway's wake key, and hands each new entry to the tap of the response that opened it.

A stream opened while the XREAD is blocked is not in it; rather than wait up to `_BLOCK_MS`
for the call to return, `open` appends to the wake key (once per round, however many
streams open meanwhile), the XREAD returns at once, and the next one includes the new keys.
Each key is read from the beginning: a response that opens late still sees every entry."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import KeyT, StreamIdT

from genq import names
from genq.tasks import stop_tasks

__all__ = ["StreamHub", "Tap"]

log = logging.getLogger(__name__)

# The longest one XREAD blocks with nothing new: also how often an idle hub re-checks.
_BLOCK_MS = 1000
# Entries per key per XREAD: each is one worker flush (many tokens), so this rarely binds.
_COUNT = 512
# The wake key lives this long past its last use: a gateway that died leaves nothing behind.
_WAKE_TTL = 60
_RECONNECT = 1.0

Entries = list[tuple[str, dict[str, str]]]


@dataclass(eq=False)
class Tap:
    """One response's streams: the entries read for them since it last took."""

    keys: list[str]
    pending: list[tuple[str, Entries]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def take(self, timeout: float) -> list[tuple[str, Entries]]:
        """The entries read since the last take, by key; [] when `timeout` passed first."""
        if not self.pending:
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except asyncio.TimeoutError:
                return []
        out, self.pending = self.pending, []
        return out


class StreamHub:
    def __init__(self, reader: aioredis.Redis, writer: aioredis.Redis) -> None:
        """`reader` is this hub's own single-connection client (it blocks); `writer` is the
        gateway's shared client, for the wake-ups."""
        self._reader = reader
        self._writer = writer
        self._wake_key = names.gateway_wake_key(uuid.uuid4().hex)
        self._wake_id = "$"
        self._taps: dict[str, Tap] = {}
        self._last: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._blocked = False
        self._waking = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await stop_tasks(self._task)
        await self._reader.aclose()

    @property
    def open_streams(self) -> int:
        return len(self._taps)

    def open(self, keys: list[str]) -> Tap:
        tap = Tap(keys=list(keys))
        for key in keys:
            if key in self._taps:
                raise ValueError(f"stream {key} is already being relayed")
        for key in keys:
            self._taps[key] = tap
            self._last[key] = "0-0"
        self._changed.set()
        if self._blocked and not self._waking:
            self._waking = True
            asyncio.get_running_loop().create_task(self._wake())
        return tap

    def close(self, tap: Tap, keys: list[str] | None = None) -> None:
        """Stop reading `keys` of `tap` (all of them by default): their streams ended."""
        for key in tap.keys if keys is None else keys:
            if self._taps.get(key) is tap:
                del self._taps[key]
                del self._last[key]

    async def _wake(self) -> None:
        try:
            pipe = self._writer.pipeline(transaction=False)
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=16, approximate=True)
            pipe.expire(self._wake_key, _WAKE_TTL)
            await pipe.execute()
        except (RedisError, OSError) as exc:  # the XREAD returns within _BLOCK_MS anyway
            log.debug("stream hub wake-up failed: %s", exc)
        finally:
            self._waking = False
        if self._changed.is_set() and self._blocked:
            # A stream opened after the woken XREAD was sent again: wake that one too.
            self._waking = True
            await self._wake()

    async def _run(self) -> None:
        while True:
            if not self._taps:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams: dict[KeyT, StreamIdT] = {self._wake_key: self._wake_id}
            streams.update(self._last.items())
            self._changed.clear()
            self._blocked = True
            try:
                reply = await self._reader.xread(streams, count=_COUNT, block=_BLOCK_MS)
            except (RedisError, OSError) as exc:
                # Responses keep waiting: their relays read the records meanwhile.
                log.warning("stream reader: %s; reconnecting", exc)
                await asyncio.sleep(_RECONNECT)
                continue
            finally:
                self._blocked = False
            # A RESP2 client with decode_responses: [[key, [(id, {field: value})]]], all str.
            self._dispatch(cast("list[tuple[str, Entries]]", reply or []))

    def _dispatch(self, reply: list[tuple[str, Entries]]) -> None:
        for key, entries in reply:
            if not entries:
                continue
            if key == self._wake_key:
                self._wake_id = entries[-1][0]
                continue
            tap = self._taps.get(key)
            if tap is None:  # closed while the XREAD was out
                continue
            self._last[key] = entries[-1][0]
            tap.pending.append((key, entries))
            tap.ready.set()
