"""Job messages are Celery protocol v2 task messages that round-trip exactly."""

from __future__ import annotations

import json

import pytest

from genq import names
from genq.errors import ValidationError
from genq.protocol import decode_task, encode_task
from genq.schema import parse_spec


def test_round_trip_keeps_the_enqueue_time_and_attempts() -> None:
    spec = parse_spec({"model": "tiny", "prompt": "hi", "priority": 4, "max_tokens": 8})
    headers, body = encode_task(spec, job_id="j1", enqueued_at=1234.5678901,
                                deadline_at=None, attempts=2)
    message = decode_task(headers, body)
    assert message.job_id == "j1"
    assert message.spec == spec
    assert message.enqueued_at == 1234.5678901
    assert message.attempts == 2


def test_it_is_a_celery_v2_task_message() -> None:
    spec = parse_spec({"model": "tiny", "prompt": "hi"})
    headers, body = encode_task(spec, job_id="j1", enqueued_at=1.0, deadline_at=None)
    assert headers["task"] == names.TASK_NAME and headers["id"] == "j1"
    args, kwargs, embed = json.loads(body)
    assert args == [] and kwargs["spec"]["prompt"] == "hi" and "callbacks" in embed


@pytest.mark.parametrize(
    ("headers", "body", "words"),
    [
        ({}, b"[]", "headers.task"),
        ({"task": "other.task", "id": "x"}, b"[]", "headers.task"),
        ({"task": names.TASK_NAME}, b"[]", "headers.id"),
        ({"task": names.TASK_NAME, "id": "x"}, b"not json", "body"),
        ({"task": names.TASK_NAME, "id": "x"}, b'[[], {}, {}]', "spec"),
        ({"task": names.TASK_NAME, "id": "x"}, b'[[], {"spec": {"model": "m"}}, {}]',
         "exactly one"),
        ({"task": names.TASK_NAME, "id": "x"},
         b'[[], {"spec": {"model": "m", "prompt": "p"}}, {}]', "enqueue time"),
    ],
)
def test_malformed_messages_say_why(headers: dict, body: bytes, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        decode_task(headers, body)
