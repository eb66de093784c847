"""The result cache's key: which fields make two requests the same request."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from genq import names
from genq.cache import CacheStats, cache_key
from genq.schema import JobSpec
from genq.settings import ClientSettings
from genq.store import SCRIPT_PREFIXES, new_record_fields

BASE: dict[str, Any] = {
    "model": "tiny",
    "prompt": "Once upon a time",
    "max_tokens": 16,
    "temperature": 0.0,
}


def key(**changes: Any) -> str | None:
    return cache_key(JobSpec.model_validate({**BASE, **changes}))


def test_who_asks_how_urgently_and_by_when_share_one_key() -> None:
    assert key() is not None
    assert (
        key(priority=9)
        == key(tenant="acme")
        == key(deadline=30.0)
        == key(idempotency_key="k-1")
        == key()
    )


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other"},
        {"prompt": "Once upon a time."},
        {"max_tokens": 17},
        {"temperature": 0.7, "seed": 1},
        {"top_p": 0.9},
        {"stop": ["\n"]},
        {"seed": 1},
        {"ignore_eos": True},
    ],
)
def test_what_changes_the_text_changes_the_key(change: dict[str, Any]) -> None:
    assert key(**change) is not None
    assert key(**change) != key()


def test_a_prompt_and_chat_messages_with_the_same_words_differ() -> None:
    chat = key(prompt=None, messages=[{"role": "user", "content": BASE["prompt"]}])
    assert chat is not None and chat != key()
    assert key(prompt=None, messages=[{"role": "system", "content": BASE["prompt"]}]) != chat


def test_stop_strings_count_as_a_set() -> None:
    assert key(stop=["a", "b"]) == key(stop=["b", "a", "a"])
    assert key(stop=["a"]) != key(stop=["a", "b"])


def test_the_seed_matters_for_sampling() -> None:
    assert key(temperature=0.8, seed=1) != key(temperature=0.8, seed=2)
    assert key(temperature=0.8, seed=1) == key(temperature=0.8, seed=1, priority=3)


def test_only_deterministic_requests_that_allow_it_have_a_key() -> None:
    assert key(temperature=0.8) is None  # sampled without a seed: a fresh text each time
    assert key(cache=False) is None
    assert key(temperature=0.8, seed=7, cache=False) is None
    assert key(temperature=0.8, seed=7) is not None


def test_the_key_is_a_sha256_hex_digest() -> None:
    digest = key()
    assert digest is not None and len(digest) == 64
    int(digest, 16)


def test_a_cacheable_record_carries_its_key_and_the_cache_settings() -> None:
    spec = JobSpec.model_validate(BASE)
    plain = new_record_fields(spec, job_id="a", tenant="t", enqueued_at=1.0, deadline_at=None)
    assert "cache_key" not in plain
    fields = new_record_fields(
        spec,
        job_id="a",
        tenant="t",
        enqueued_at=1.0,
        deadline_at=None,
        cache_key="k",
        cache_ttl=60,
        cache_max_bytes=1000,
    )
    assert (fields["cache_key"], fields["cache_ttl"], fields["cache_max_bytes"]) == (
        "k",
        "60",
        "1000",
    )


def test_hit_rate_counts_followers_as_work_saved() -> None:
    stats = CacheStats(hits=3, misses=4, followers=1)
    assert stats.lookups == 8
    assert stats.hit_rate == 0.5
    assert CacheStats(0, 0, 0).hit_rate == 0.0


def test_cache_settings_are_bounded() -> None:
    settings = ClientSettings()
    assert settings.result_cache and settings.cache_ttl > 0 and settings.cache_max_bytes > 0
    with pytest.raises(pydantic.ValidationError):
        ClientSettings(cache_ttl=-1)
    with pytest.raises(pydantic.ValidationError):
        ClientSettings(cache_max_bytes=-1)


def test_cache_keys_live_under_genq_and_apart_from_jobs() -> None:
    keys = {
        names.cache_entry_key("d"),
        names.flight_key("d"),
        names.followers_key("d"),
        names.job_key("d"),
        names.CACHE_STATS,
    }
    assert len(keys) == 5 and all(k.startswith("genq:") for k in keys)
    assert names.job_key("d").startswith(SCRIPT_PREFIXES[0])
    assert names.celery_result_key("d").startswith(SCRIPT_PREFIXES[1])
