"""Everything that creates jobs and reads results. Never imports worker code."""

from __future__ import annotations

from producers.client import Client

__all__ = ["Client"]
