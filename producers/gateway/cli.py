"""`genq gateway` (`serve`) and `genq keys` (`keys_app`).

This module imports no web framework: `genq keys` must start fast. `serve` imports the app
when it runs."""

from __future__ import annotations

import getpass
import json
import resource
from datetime import datetime, timezone
from typing import Any

import pydantic
import typer

from genq.errors import GenqError
from genq.settings import GatewaySettings
from producers.gateway.audit import AuditLog
from producers.gateway.keys import KeyStore

__all__ = ["keys_app", "serve"]

keys_app = typer.Typer(no_args_is_help=True, help="API keys for the HTTP gateway.")


def serve(
    host: str | None = None,
    port: int | None = None,
    *,
    api_keys: str | None = None,
    log_level: str = "info",
    settings: GatewaySettings | None = None,
) -> None:
    """Run the gateway with uvicorn until interrupted. Unset arguments come from GENQ_*."""
    import uvicorn

    from producers.gateway.app import create_app

    base = settings or GatewaySettings()
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["gateway_host"] = host
    if port is not None:
        overrides["gateway_port"] = port
    if api_keys is not None:
        overrides["api_keys"] = api_keys
    # Re-validated: a bad value from the command line fails as one from the environment does.
    try:
        settings = GatewaySettings.model_validate({**base.model_dump(), **overrides})
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        typer.echo(f"genq: {field}: {err['msg'].removeprefix('Value error, ')}", err=True)
        raise typer.Exit(2) from None
    _raise_file_limit()
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=log_level,
        proxy_headers=False,
    )


def _raise_file_limit() -> None:
    """Every open request is a socket: lift the soft limit on open files to the hard one
    (often 1,024 by default, which a few hundred streaming clients and their jobs reach)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and hard != resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _store() -> tuple[KeyStore, AuditLog]:
    settings = GatewaySettings()
    return KeyStore(settings.redis_url, settings), AuditLog(settings.audit_log)


def _fail(exc: GenqError) -> None:
    typer.echo(f"genq: {exc}", err=True)
    raise typer.Exit(2 if isinstance(exc, ValueError) else 1)


@keys_app.command("create")
def create(
    tenant: str = typer.Option(..., "--tenant", "-t", help="Whose jobs this key owns."),
    name: str = typer.Option("", "--name", help="A label, e.g. who holds the key."),
) -> None:
    """Create a key for TENANT; prints it once (only its hash is stored)."""
    store, audit = _store()
    try:
        secret, info = store.create(tenant, name=name)
    except GenqError as exc:
        _fail(exc)
        return
    finally:
        store.close()
    audit.write(
        "key.create", key=info.id, tenant=tenant, name=name or None, by=getpass.getuser(), via="cli"
    )
    audit.close()
    typer.echo(secret)
    typer.echo(
        f"id {info.id}  tenant {tenant}  (store the key now: it is not shown again)", err=True
    )


@keys_app.command("list")
def list_keys(
    tenant: str | None = typer.Option(None, "--tenant", "-t"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List keys (their IDs, tenants and names; never the keys)."""
    store, _audit = _store()
    try:
        infos = store.all(tenant=tenant)
    except GenqError as exc:
        _fail(exc)
        return
    finally:
        store.close()
    for info in infos:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "id": info.id,
                        "tenant": info.tenant,
                        "name": info.name,
                        "created_at": info.created_at,
                    }
                )
            )
        else:
            when = datetime.fromtimestamp(info.created_at, timezone.utc).strftime("%Y-%m-%d")
            typer.echo(f"{info.id}  {info.tenant:<20} {when}  {info.name}")


@keys_app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key's ID (from `genq keys list`).")) -> None:
    """Delete a key: requests with it get 401 at once."""
    store, audit = _store()
    try:
        info = store.revoke(key_id)
    except GenqError as exc:
        _fail(exc)
        return
    finally:
        store.close()
    audit.write(
        "key.revoke", key=key_id, tenant=info.tenant or None, by=getpass.getuser(), via="cli"
    )
    audit.close()
    typer.echo(f"revoked {key_id}")
