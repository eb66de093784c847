"""A request the broker half-accepted: which of its accepted jobs the gateway cancels."""

from __future__ import annotations

from genq.errors import PublishError
from genq.schema import parse_spec
from producers.gateway.submission import doomed_by_retry


def test_only_accepted_jobs_without_an_idempotency_key_are_cancelled() -> None:
    specs = [
        parse_spec(
            {"model": "m", "prompt": f"p{i}", **({"idempotency_key": f"k{i}"} if i % 2 else {})}
        )
        for i in range(4)
    ]
    # 0 and 1 were published and confirmed, 2 and 3 were not.
    exc = PublishError(
        "broker away", accepted=["a0", "a1"], accepted_positions=[0, 1], unaccepted=[2, 3]
    )
    # a1 has a key: the client's retry with it gets a1 back, so a1 must live on.
    assert doomed_by_retry(specs, exc) == ["a0"]


def test_nothing_accepted_nothing_cancelled() -> None:
    specs = [parse_spec({"model": "m", "prompt": "p"})]
    assert doomed_by_retry(specs, PublishError("x", unaccepted=[0])) == []
