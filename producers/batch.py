"""`genq batch`: JSONL of requests in, JSONL of results out, in the same order.

Each input line is a job request (the fields of `JobSpec`) plus an optional `custom_id`
echoed on its result line. Every line is validated before anything is submitted, so a bad
line (named by its number) publishes nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from genq.errors import ValidationError
from producers.client import Client

__all__ = ["read_requests", "run_batch"]


def read_requests(path: Path, *, default_model: str | None) -> list[tuple[Any, dict[str, Any]]]:
    requests = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise ValidationError(f"line {number}: not JSON ({exc})") from None
            if not isinstance(data, dict):
                raise ValidationError(f"line {number}: expected an object")
            custom_id = data.pop("custom_id", None)
            if default_model and "model" not in data:
                data["model"] = default_model
            requests.append((custom_id, data))
    return requests


def run_batch(
    client: Client, path: Path, output: Path, *, default_model: str | None, timeout: float | None
) -> None:
    requests = read_requests(path, default_model=default_model)
    specs = []
    for number, (_cid, data) in enumerate(requests, 1):
        try:
            specs.append(client.validate(data))
        except ValidationError as exc:
            raise ValidationError(f"line {number}: {exc}", field=exc.field) from None
    ids = client.submit_many(specs)
    with tqdm(total=len(ids), desc="jobs", unit="job", file=sys.stderr) as bar:
        records = client.wait_many(ids, timeout=timeout, on_done=lambda _r: bar.update(1))
    out: TextIO = sys.stdout if str(output) == "-" else output.open("w", encoding="utf-8")
    try:
        for (custom_id, _data), record in zip(requests, records, strict=True):
            line = {
                "custom_id": custom_id,
                **record.model_dump(
                    mode="json",
                    include={"id", "state", "text", "finish_reason", "usage", "error", "cached"},
                ),
            }
            out.write(json.dumps(line) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
