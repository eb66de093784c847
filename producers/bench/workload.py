"""The bench workload: prompts and sampling parameters, the same for every contender."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Workload", "percentile"]

_WORDS = (  # noqa: SIM905 - a word list reads best as words
    "queue worker engine token batch score level wait result cache prefix redis "
    "rabbit celery flower model prompt sample decode schedule fleet"
).split()


@dataclass(frozen=True)
class Workload:
    model_path: Path
    requests: int = 512
    max_tokens: int = 128
    temperature: float = 0.8
    max_num_seqs: int = 256
    max_model_len: int = 1024
    naive_requests: int = 32
    repeat: int = 3
    seed: int = 0
    prompts: tuple[str, ...] = field(default=(), repr=False)

    def with_prompts(self) -> Workload:
        rng = random.Random(self.seed)
        prompts = tuple(
            f"{i}: " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 48)))
            for i in range(self.requests)
        )
        return Workload(**{**asdict(self), "prompts": prompts})

    def sampling(self) -> dict[str, Any]:
        """vLLM SamplingParams fields; genq's JobSpec takes the same names."""
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "ignore_eos": True,
            "seed": None,
        }

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("prompts")
        d["model_path"] = str(self.model_path)
        return d


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]
