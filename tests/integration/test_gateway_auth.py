"""The HTTP gateway: API keys, tenant isolation, and the `genq keys` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from producers.gateway.keys import KeyStore
from tests.integration.gateway_kit import (
    GatewayServer,
    error_of,
    new_tenant,
)

# -- 3. API keys and tenants ------------------------------------------------------------------


def test_keys_are_required_when_on(keyed: GatewayServer, idle_model: str) -> None:
    job = {"model": idle_model, "prompt": "hi"}
    with keyed.http() as http:
        response = http.post("/v1/jobs", json=job)
        assert response.status_code == 401
        assert "missing API key" in error_of(response)["message"]
        response = http.post("/v1/jobs", json=job, headers={"Authorization": "Bearer genq-nope"})
        assert response.status_code == 401
        assert "invalid API key" in error_of(response)["message"]
        assert http.get("/v1/models").status_code == 401
        assert http.get("/healthz").status_code == 200  # no tenant's business
    with pytest.raises(openai.AuthenticationError):
        keyed.openai("genq-wrong", max_retries=0).models.list()


def test_tenants_see_only_their_own_jobs(
    keyed: GatewayServer, keys: KeyStore, idle_model: str, model_name: str
) -> None:
    a_tenant, b_tenant = new_tenant(), new_tenant()
    a_key, _ = keys.create(a_tenant)
    b_key, _ = keys.create(b_tenant)
    with (
        keyed.http(Authorization=f"Bearer {a_key}") as a,
        keyed.http(Authorization=f"Bearer {b_key}") as b,
    ):
        job_id = a.post("/v1/jobs", json={"model": idle_model, "prompt": "mine"}).json()["id"]
        record = a.get(f"/v1/jobs/{job_id}").json()
        assert record["tenant"] == a_tenant
        # Another tenant's job reads exactly like a job that does not exist.
        assert b.get(f"/v1/jobs/{job_id}").status_code == 404
        theirs = error_of(b.get(f"/v1/jobs/{job_id}"))
        missing = error_of(b.get("/v1/jobs/nonexistent"))
        assert theirs["message"].replace(job_id, "nonexistent") == missing["message"]
        assert {**theirs, "message": ""} == {**missing, "message": ""}
        assert b.delete(f"/v1/jobs/{job_id}").status_code == 404
        assert a.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
        # A key can't submit for another tenant.
        response = b.post("/v1/jobs", json={"model": idle_model, "prompt": "x", "tenant": a_tenant})
        assert response.status_code == 403 and error_of(response)["param"] == "tenant"
        assert a.delete(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"
    # The OpenAI endpoints take the same keys.
    chat = keyed.openai(b_key).chat.completions.create(
        model=model_name, max_tokens=2, messages=[{"role": "user", "content": "hi"}]
    )
    job_id = chat.id.removeprefix("chatcmpl-")
    with keyed.http(Authorization=f"Bearer {b_key}") as b:
        assert b.get(f"/v1/jobs/{job_id}").json()["tenant"] == b_tenant


def test_a_revoked_key_is_refused(keyed: GatewayServer, keys: KeyStore, idle_model: str) -> None:
    secret, info = keys.create(new_tenant(), name="short-lived")
    with keyed.http(Authorization=f"Bearer {secret}") as http:
        assert http.get("/v1/models").status_code == 200
        keys.revoke(info.id)
        assert http.get("/v1/models").status_code == 401


def test_genq_keys_cli_creates_a_working_key(
    keyed: GatewayServer, fleet_env: dict[str, str], audit_path: Path
) -> None:
    from typer.testing import CliRunner

    from producers.gateway.cli import keys_app

    tenant = new_tenant()
    env = {"GENQ_AUDIT_LOG": str(audit_path)}
    done = CliRunner().invoke(keys_app, ["create", "--tenant", tenant, "--name", "ci"], env=env)
    assert done.exit_code == 0, done.output
    secret = done.stdout.strip().splitlines()[0]
    assert secret.startswith("genq-")
    with keyed.http(Authorization=f"Bearer {secret}") as http:
        assert http.get("/v1/models").status_code == 200
    listed = CliRunner().invoke(keys_app, ["list", "--tenant", tenant, "--json"], env=env)
    (line,) = listed.stdout.strip().splitlines()
    key_id = json.loads(line)["id"]
    assert secret not in listed.stdout
    assert CliRunner().invoke(keys_app, ["revoke", key_id], env=env).exit_code == 0
    assert (
        CliRunner().invoke(keys_app, ["create", "--tenant", "bad tenant!"], env=env).exit_code == 2
    )
    events = [json.loads(x) for x in audit_path.read_text().splitlines()]
    assert {"key.create", "key.revoke"} <= {e["event"] for e in events if e.get("key") == key_id}
