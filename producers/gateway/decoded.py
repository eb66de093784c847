"""Reads from a Redis client made with `decode_responses=True`, typed as what they are
(redis-py's annotations say `bytes | str` whatever the client)."""

from __future__ import annotations

from typing import Any, cast

__all__ = ["text_hash", "texts"]


def text_hash(raw: Any) -> dict[str, str]:
    return cast(dict[str, str], raw)


def texts(raw: Any) -> list[str]:
    return cast(list[str], raw)
