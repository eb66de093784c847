"""Queue and key names: one place, distinct per model and level."""

from __future__ import annotations

from genq import names


def test_level_queues_are_distinct_and_routed_by_model_and_level() -> None:
    queues = {names.level_queue(m, p) for m in ("a", "b") for p in range(10)}
    keys = {names.level_routing_key(m, p) for m in ("a", "b") for p in range(10)}
    assert len(queues) == len(keys) == 20
    assert names.level_routing_key("tiny", 3) == "tiny.p3"
    assert names.dead_queue("tiny") != names.level_queue("tiny", 0)


def test_celery_result_key_is_celerys_own() -> None:
    # AsyncResult reads this exact key: it is Celery's naming, not ours.
    assert names.celery_result_key("abc") == "celery-task-meta-abc"


def test_redis_keys_share_the_genq_prefix() -> None:
    for key in (
        names.job_key("x"),
        names.idempotency_key("t", "k"),
        names.LEASES,
        names.CANCEL_CHANNEL,
    ):
        assert key.startswith("genq:")
