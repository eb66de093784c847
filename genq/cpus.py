"""`--cpus` lists: "0-3", "1", "0,2,4-5" (the form taskset and VLLM_CPU_OMP_THREADS_BIND take)."""

from __future__ import annotations

import os

from genq.errors import ValidationError

__all__ = ["parse_cpus", "pin_process"]


def parse_cpus(text: str) -> set[int]:
    cores: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ValidationError(
                f"--cpus: {part!r} is not a core number or range (e.g. 0-3,6)", field="cpus"
            ) from None
        if low < 0 or high < low:
            raise ValidationError(
                f"--cpus: {part!r} is not an ascending range of core numbers", field="cpus"
            )
        cores.update(range(low, high + 1))
    return cores


def pin_process(text: str) -> None:
    """Bind this process, and what it starts later, to the cores in `text`."""
    cores = parse_cpus(text)
    available = os.sched_getaffinity(0)
    if not cores <= available:
        raise ValidationError(
            f"--cpus: cores {sorted(cores - available)} are not available "
            f"here (available: {sorted(available)})",
            field="cpus",
        )
    os.sched_setaffinity(0, cores)
