"""Group commit in the gateway (producers/gateway/batcher.py), the pure parts: requests that
arrive while a submission is out go together in the next, and a partly published batch
fails only the requests that lost jobs. `submit_many` here is a stand-in that records its
calls: what is tested is how requests are merged and answered, not the submission."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from genq.errors import PublishError
from genq.schema import JobSpec, parse_spec
from producers.gateway.batcher import Batcher


def specs(n: int, tag: str) -> list[JobSpec]:
    return [parse_spec({"model": "m", "prompt": f"{tag}{i}"}) for i in range(n)]


def test_requests_arriving_during_a_submission_go_together_in_the_next() -> None:
    calls: list[list[str]] = []
    first_out = threading.Event()
    release = threading.Event()

    def submit_many(batch: list[JobSpec]) -> list[str]:
        calls.append([s.prompt or "" for s in batch])
        if len(calls) == 1:
            first_out.set()
            release.wait(10)
        return [f"id-{s.prompt}" for s in batch]

    async def main() -> list[list[str]]:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(submit_many, pool)
            batcher.start()
            first = asyncio.ensure_future(batcher.submit(specs(1, "a")))
            while not first_out.is_set():
                await asyncio.sleep(0.01)
            rest = [
                asyncio.ensure_future(batcher.submit(specs(n, tag)))
                for n, tag in ((2, "b"), (1, "c"), (3, "d"))
            ]
            await asyncio.sleep(0.05)
            release.set()
            answers = [await first] + [await r for r in rest]
            await batcher.stop()
            assert batcher.batches == 2
            return answers

    answers = asyncio.run(main())
    assert calls == [["a0"], ["b0", "b1", "c0", "d0", "d1", "d2"]]
    assert answers == [["id-a0"], ["id-b0", "id-b1"], ["id-c0"], ["id-d0", "id-d1", "id-d2"]]


def test_a_partly_published_batch_fails_only_the_requests_that_lost_jobs() -> None:
    def submit_many(batch: list[JobSpec]) -> list[str]:
        # Positions 0, 1 and 3 confirmed; 2 and 4 not.
        raise PublishError(
            "the broker went away",
            accepted=["j0", "j1", "j3"],
            accepted_positions=[0, 1, 3],
            unaccepted=[2, 4],
        )

    async def main() -> list[list[str] | BaseException]:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(submit_many, pool)
            # Queued before the batcher runs: the three go in one batch.
            calls = [
                asyncio.ensure_future(batcher.submit(specs(n, t)))
                for n, t in ((2, "a"), (1, "b"), (2, "c"))
            ]
            batcher.start()
            answers = await asyncio.gather(*calls, return_exceptions=True)
            await batcher.stop()
            return answers

    whole, lost, half = asyncio.run(main())
    assert whole == ["j0", "j1"]
    assert isinstance(lost, PublishError)
    assert (lost.accepted, lost.accepted_positions, lost.unaccepted) == ([], [], [0])
    assert isinstance(half, PublishError)
    assert (half.accepted, half.accepted_positions, half.unaccepted) == (["j3"], [0], [1])


def test_any_other_failure_reaches_every_request_of_the_batch() -> None:
    def submit_many(batch: list[JobSpec]) -> list[str]:
        raise ConnectionError("redis is away")

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(submit_many, pool)
            calls = [asyncio.ensure_future(batcher.submit(specs(1, t))) for t in "ab"]
            batcher.start()
            for call in calls:
                with pytest.raises(ConnectionError, match="redis is away"):
                    await call
            await batcher.stop()

    asyncio.run(main())
