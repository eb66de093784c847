"""Which messages of a batch count as confirmed: exactly those the broker acked, in any
order, never one it returned as unroutable, never one it nacked."""

from __future__ import annotations

from producers.publisher import OutgoingJob, _Batch


def jobs(n: int) -> list[OutgoingJob]:
    return [OutgoingJob(f"job{i}", "m", 0, {}, b"") for i in range(n)]


def published(n: int) -> _Batch:
    batch = _Batch(jobs(n))
    for i in range(n):
        batch.add(i + 1, i)  # delivery tags start at 1
    return batch


def test_out_of_order_acks_confirm_exactly_the_acked_messages() -> None:
    batch = published(4)
    batch.settle(3, multiple=False, ok=True)
    batch.settle(1, multiple=False, ok=True)
    batch.fail("connection closed")
    assert batch.acked == [True, False, True, False]  # not a prefix: 3 is confirmed
    assert batch.failed == "connection closed"


def test_a_multiple_ack_covers_every_tag_up_to_it() -> None:
    batch = published(4)
    batch.settle(3, multiple=True, ok=True)
    assert batch.acked == [True, True, True, False] and not batch.done.is_set()
    batch.settle(4, multiple=False, ok=True)
    assert batch.done.is_set() and batch.failed is None


def test_a_returned_message_is_not_confirmed_by_its_ack() -> None:
    batch = published(2)
    batch.returned_unroutable("job1")
    batch.settle(2, multiple=True, ok=True)
    assert batch.acked == [True, False]
    assert batch.done.is_set() and "unroutable" in (batch.failed or "")


def test_a_nack_fails_only_its_messages() -> None:
    batch = published(3)
    batch.settle(2, multiple=False, ok=False)
    batch.settle(3, multiple=True, ok=True)
    assert batch.acked == [True, False, True]
    assert batch.failed == "nacked by the broker"
