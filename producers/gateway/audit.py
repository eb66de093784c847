"""The audit log: one JSON line for every submit, cancel and key change — who, what, when.

Lines go to stderr, a file (appended, one write per line, so several gateways may share
it), or nowhere (`GENQ_AUDIT_LOG=off`). Who is the tenant, the API key's public ID (never
the key) and the client's address; prompts are not logged."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime, timezone
from typing import IO, Any

__all__ = ["AuditLog"]


class AuditLog:
    def __init__(self, target: str) -> None:
        self._lock = threading.Lock()
        self._stream: IO[str] | None
        self._owned = False
        if target == "off":
            self._stream = None
        elif target == "-":
            self._stream = sys.stderr
        else:
            self._stream = open(target, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self._owned = True

    def write(self, event: str, **fields: Any) -> None:
        """`event` (`job.submit`, `job.cancel`, `key.create`, ...) and what it was about."""
        if self._stream is None:
            return
        now = time.time()
        line = json.dumps(
            {
                "ts": datetime.fromtimestamp(now, timezone.utc).isoformat(),
                "event": event,
                **{k: v for k, v in fields.items() if v is not None},
            },
            separators=(",", ":"),
            default=str,
        )
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._owned and self._stream is not None:
            self._stream.close()
        self._stream = None
