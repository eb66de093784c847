"""How much more a worker takes from the broker while its engine is nearly empty.

A worker holds `window` unstarted jobs per level (its RabbitMQ prefetch): few, so the order
is exact and other workers see the rest. But an engine that empties at once (a worker
starting, a wave of equal jobs ending together) then fills only `window` jobs per level per
round trip (ack after ADMIT, broker, delivery, admission); with every job on one level and
256 slots that is 128 round trips, taken while the engine runs steps on the same cores.
Measured on the bench: the 256th job of a burst started 0.6 to 6 s after the first.

So while the free slots are many times what the windows hold, each level queue gets a second
consumer whose prefetch is the room's share per level (`surge_prefetch`); it is cancelled
once the room is down to what the windows cover. Whatever it delivered is admitted at once,
as the engine has room for it: ordering among those is the score's, as for any held job."""

from __future__ import annotations

__all__ = ["surge_prefetch"]

# The room, as a multiple of what the windows hold, that starts a surge: well above 1 so a
# busy engine freeing a few slots at a time never surges (a surge costs a consume and a
# cancel per level queue).
_SURGE_FACTOR = 4


def surge_prefetch(room: int, *, levels: int, window: int, current: int) -> int:
    """The surge consumers' prefetch per level for an engine with `room` free slots, given
    the `current` one (0: no surge). Kept while the room stays above what the windows hold,
    so a surge is not restarted at every admission as the room shrinks."""
    held = levels * window
    if current:
        return current if room > held else 0
    if room >= _SURGE_FACTOR * held:
        return room // levels
    return 0
