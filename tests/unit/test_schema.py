"""The job schema and its limits: bad input is refused with the field and the limit."""

from __future__ import annotations

import pytest

from genq.errors import GenqError, ValidationError
from genq.schema import JobSpec, parse_spec
from genq.settings import FleetSettings

SETTINGS = FleetSettings(models=["tiny"], levels=10, max_tokens_limit=512)


def check(**fields: object) -> JobSpec:
    spec = parse_spec({"model": "tiny", "prompt": "hello", **fields})
    spec.check(SETTINGS)
    return spec


def test_a_valid_request_passes_and_keeps_the_prompt_verbatim() -> None:
    spec = check(prompt="  {not} a %s template\n", priority=9, max_tokens=512)
    assert spec.prompt == "  {not} a %s template\n"
    assert spec.priority == 9


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"prompt": ""}, None, "prompt: must not be empty"),
        ({"model": "gpt-5"}, "model", "not served"),
        ({"max_tokens": 0}, "max_tokens", "1..512"),
        ({"max_tokens": 513}, "max_tokens", "1..512"),
        ({"priority": 10}, "priority", "0..9"),
        ({"priority": -1}, "priority", "0..9"),
        ({"priority": "high"}, "priority", "integer"),
        ({"priority": True}, "priority", "integer"),
        ({"max_tokens": 2.5}, "max_tokens", "integer"),
        ({"temperature": 3}, "temperature", "2"),
        ({"top_p": 0}, "top_p", "0"),
        ({"colour": "red"}, "colour", "Extra"),
        ({"messages": [{"role": "user", "content": "hi"}]}, None, "exactly one"),
    ],
)
def test_bad_input_names_the_field_and_the_limit(
    fields: dict[str, object], field: str | None, words: str
) -> None:
    with pytest.raises(ValidationError) as info:
        check(**fields)
    assert isinstance(info.value, GenqError)
    assert words in str(info.value)
    if field is not None:
        assert info.value.field == field
        assert str(info.value).startswith(field)


def test_chat_messages_instead_of_a_prompt() -> None:
    spec = parse_spec({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
    spec.check(SETTINGS)
    assert spec.messages is not None and spec.messages[0].content == "hi"


def test_an_oversized_prompt_is_refused() -> None:
    small = FleetSettings(models=["tiny"], max_prompt_chars=10)
    with pytest.raises(ValidationError, match="prompt: 11 characters is over the limit of 10"):
        parse_spec({"model": "tiny", "prompt": "x" * 11}).check(small)


def test_deadline_is_relative_when_small_and_absolute_when_large() -> None:
    assert parse_spec({"model": "m", "prompt": "p", "deadline": 5}).deadline_at(100.0) == 105.0
    assert parse_spec({"model": "m", "prompt": "p", "deadline": 2e9}).deadline_at(100.0) == 2e9


def test_deterministic_means_greedy_or_seeded() -> None:
    assert parse_spec({"model": "m", "prompt": "p", "temperature": 0}).deterministic
    assert parse_spec({"model": "m", "prompt": "p", "seed": 3}).deterministic
    assert not parse_spec({"model": "m", "prompt": "p"}).deterministic


def test_models_setting_reads_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENQ_MODELS", "a, b")
    assert FleetSettings().models == ["a", "b"]
