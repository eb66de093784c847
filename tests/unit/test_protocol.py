"""What travels between genq's parts: job messages (Celery protocol v2 task messages) round-trip
exactly, also when rebuilt from a job's record; dead letters say why; the AMQP properties."""

from __future__ import annotations

import json

import pika
import pytest

from genq import names
from genq.errors import ValidationError
from genq.protocol import (
    TaskMessage,
    dead_letter_attempts,
    dead_letter_headers,
    dead_letter_reason,
    decode_task,
    encode_task,
    message_job_id,
    message_properties,
)
from genq.schema import parse_spec
from genq.store import new_record_fields


def test_round_trip_keeps_the_enqueue_time_and_attempts() -> None:
    spec = parse_spec({"model": "tiny", "prompt": "hi", "priority": 4, "max_tokens": 8})
    headers, body = encode_task(
        spec, job_id="j1", enqueued_at=1234.5678901, deadline_at=None, attempts=2
    )
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
        ({"task": names.TASK_NAME, "id": "x"}, b"[[], {}, {}]", "spec"),
        (
            {"task": names.TASK_NAME, "id": "x"},
            b'[[], {"spec": {"model": "m"}}, {}]',
            "exactly one",
        ),
        (
            {"task": names.TASK_NAME, "id": "x"},
            b'[[], {"spec": {"model": "m", "prompt": "p"}}, {}]',
            "enqueue time",
        ),
    ],
)
def test_malformed_messages_say_why(headers: dict, body: bytes, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        decode_task(headers, body)


def test_a_message_rebuilt_from_its_record_is_the_message_submitted() -> None:
    spec = parse_spec({"model": "tiny", "prompt": "hi", "priority": 3, "max_tokens": 8})
    record = new_record_fields(
        spec, job_id="j1", tenant="t", enqueued_at=1234.5678901, deadline_at=1300.25
    )
    record["attempts"] = "2"
    message = TaskMessage.from_record("j1", record)
    assert message == TaskMessage(
        job_id="j1", spec=spec, enqueued_at=1234.5678901, deadline_at=1300.25, attempts=2
    )
    assert decode_task(*message.encode()) == message
    assert decode_task(*message.encode(attempts=0)).attempts == 0
    assert message.encode() == encode_task(
        spec, job_id="j1", enqueued_at=1234.5678901, deadline_at=1300.25, attempts=2
    )
    no_deadline = new_record_fields(
        spec, job_id="j2", tenant="t", enqueued_at=1.0, deadline_at=None
    )
    assert TaskMessage.from_record("j2", no_deadline).deadline_at is None


@pytest.mark.parametrize(
    "damage",
    [
        {"spec": "{not json"},
        {"enqueued_at": "soon"},
        {"attempts": "many"},
    ],
)
def test_an_unreadable_record_raises_value_error(damage: dict[str, str]) -> None:
    spec = parse_spec({"model": "tiny", "prompt": "hi"})
    record = {
        **new_record_fields(spec, job_id="j", tenant="t", enqueued_at=1.0, deadline_at=None),
        **damage,
    }
    with pytest.raises(ValueError):
        TaskMessage.from_record("j", record)
    with pytest.raises(KeyError):
        TaskMessage.from_record("j", {"id": "j"})


def test_a_dead_letter_says_why_and_after_how_many_attempts() -> None:
    spec = parse_spec({"model": "tiny", "prompt": "hi"})
    headers, _body = encode_task(spec, job_id="j1", enqueued_at=1.0, deadline_at=None)
    dead = dead_letter_headers(headers, reason="poison", attempts=3)
    assert {k: dead[k] for k in headers} == headers
    assert (dead_letter_reason(dead), dead_letter_attempts(dead)) == ("poison", 3)
    assert message_job_id(dead) == "j1"
    # Dead-lettered by RabbitMQ itself (rejected, expired), or not a job at all:
    assert dead_letter_reason({}) == "dead-lettered by RabbitMQ"
    assert dead_letter_attempts({}) == 0
    assert message_job_id({"id": 7}) is None


def test_every_job_message_is_persistent_json_keyed_by_its_job() -> None:
    props = pika.BasicProperties(**message_properties("j1", {"h": 1}, turn=4))
    assert props.delivery_mode == pika.DeliveryMode.Persistent.value
    assert (props.content_type, props.content_encoding) == ("application/json", "utf-8")
    assert (props.correlation_id, props.headers, props.priority) == ("j1", {"h": 1}, 4)
