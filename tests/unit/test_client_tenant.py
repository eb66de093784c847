"""The tenant of a job is resolved once, by the client: the message then names it, so the
producers' demand counters and the worker's fair share count it under one name."""

from __future__ import annotations

from genq.protocol import decode_task, encode_task
from producers.client import Client


def test_a_job_without_a_tenant_travels_under_the_clients_default_tenant() -> None:
    client = Client(default_tenant="acme", models=["m"])  # connects lazily: no services
    try:
        spec = client.validate({"model": "m", "prompt": "hi"})
        named = client.validate({"model": "m", "prompt": "hi", "tenant": "globex"})
    finally:
        client.close()
    assert (spec.tenant, named.tenant) == ("acme", "globex")
    headers, body = encode_task(spec, job_id="j", enqueued_at=1.0, deadline_at=None)
    assert decode_task(headers, body).spec.tenant == "acme"
