"""Streaming, the pure parts: OpenAI's chunks, and how relayed pieces are deduplicated."""

from __future__ import annotations

import json
from typing import Any

from genq.schema import JobRecord, JobState
from producers.gateway.chunks import DONE, ChunkWriter
from producers.gateway.relay import _Choice


def event(raw: bytes) -> dict[str, Any]:
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    return dict(json.loads(raw[6:]))


def test_chat_chunks_have_openais_shape() -> None:
    writer = ChunkWriter(kind="chat", id="chatcmpl-1", model="tiny", created=7, include_usage=True)
    role, text, end = (
        event(writer.role(0)),
        event(writer.text(0, "hi")),
        event(writer.finish(0, "length")),
    )
    assert role["object"] == "chat.completion.chunk" and role["usage"] is None
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text["choices"][0] == {
        "index": 0,
        "logprobs": None,
        "finish_reason": None,
        "delta": {"content": "hi"},
    }
    assert end["choices"][0]["finish_reason"] == "length" and end["choices"][0]["delta"] == {}
    usage = event(writer.usage({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}))
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 3
    assert DONE == b"data: [DONE]\n\n"


def test_completion_chunks_carry_text() -> None:
    writer = ChunkWriter(kind="completion", id="cmpl-1", model="tiny", created=7)
    chunk = event(writer.text(2, "abc"))
    assert chunk["object"] == "text_completion" and "usage" not in chunk
    assert chunk["choices"][0]["text"] == "abc" and chunk["choices"][0]["index"] == 2


def record(text: str) -> JobRecord:
    return JobRecord(
        id="j",
        state=JobState.SUCCEEDED,
        model="tiny",
        priority=0,
        tenant="t",
        enqueued_at=0.0,
        text=text,
    )


def test_pieces_are_relayed_once_even_when_a_rerun_repeats_them() -> None:
    choice = _Choice(0, "j")
    assert choice.take(0, "Once ") == "Once "
    assert choice.take(5, "upon") == "upon"
    assert choice.take(0, "Once up") == ""  # a rerun, repeating the same text
    assert choice.take(7, "on a") == " a"  # ... and going past what was sent
    assert choice.rest(record("Once upon a time")) == " time"


def test_a_gap_or_a_diverging_rerun_leaves_the_rest_to_the_record() -> None:
    gap = _Choice(0, "j")
    assert gap.take(0, "Once") == "Once"
    assert gap.take(9, "a time") == ""  # the stream's head was trimmed
    assert gap.take(4, " upon") == ""  # stopped relaying for good
    assert gap.rest(record("Once upon a time")) == " upon a time"
    other = _Choice(0, "j")
    other.take(0, "Once")
    assert other.take(0, "Twice") == ""  # a sampled rerun took another path
    assert other.rest(record("Twice upon")) == ""  # can't retract what was sent
