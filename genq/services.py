"""Check and start the local services genq needs: RabbitMQ (the broker) and Redis (results).

`genq services check` and `genq services start` are thin wrappers over `check()` and
`start()`. A check is a real client connection (pika's `BlockingConnection`, Redis `PING`),
not a port probe, so a wrong password or vhost shows up here and not in the first job.
`start()` launches *installed* servers the way the development and CI machines do (no
systemd: the server commands themselves); it never installs anything, and never stands in
a fake for a service that is missing. scripts/services.sh holds the same start commands for
the set-up script, which runs before any Python exists.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pika
import pika.exceptions
import redis
import redis.exceptions

from genq.tls import TlsSettings, pika_parameters, redis_from_url

__all__ = [
    "DEFAULT_BROKER_URL",
    "DEFAULT_REDIS_URL",
    "ServiceStatus",
    "ServiceUrls",
    "check",
    "start",
]

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Long enough for a loaded machine to finish a TCP + AMQP handshake on loopback, short
# enough that `genq services check` against a dead host answers at once.
CHECK_TIMEOUT = 3.0
# RabbitMQ boots an Erlang VM, Mnesia and its plugins: 5-20 s here. Past 60 s something
# is wrong, and waiting longer would only hide it.
START_WAIT = 60.0
# How often a starting server is asked again; a refused connection costs microseconds.
_POLL_INTERVAL = 0.5

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", ""})
# kombu/Celery spell the broker `pyamqp://` or `librabbitmq://`; pika only knows amqp(s).
_AMQP_ALIASES = {"pyamqp": "amqp", "librabbitmq": "amqp"}
# Debian puts the servers in /usr/sbin, which is not on a normal user's PATH.
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """The outcome of checking (or starting) one service."""

    name: str  # "rabbitmq" or "redis"
    url: str  # the URL checked, password masked
    ok: bool
    detail: str  # server version when ok; what failed and what to do when not


class ServiceUrls(TlsSettings, Protocol):
    """Anything with the two URLs and the TLS settings, such as genq's settings classes."""

    @property
    def broker_url(self) -> str: ...

    @property
    def redis_url(self) -> str: ...


def check(
    settings: ServiceUrls,
    *,
    broker_url: str | None = None,
    redis_url: str | None = None,
    timeout: float = CHECK_TIMEOUT,
) -> list[ServiceStatus]:
    """Connect to the broker and to Redis; one status each, broker first.

    URLs come from the keyword arguments, else from `settings`, which also give the TLS.
    """
    broker, results = _urls(settings, broker_url, redis_url)
    return [
        _probe_broker(broker, timeout, settings)[0],
        _probe_redis(results, timeout, settings)[0],
    ]


def start(
    settings: ServiceUrls,
    *,
    broker_url: str | None = None,
    redis_url: str | None = None,
    wait: float = START_WAIT,
) -> list[ServiceStatus]:
    """Start whichever local server does not answer, wait for it, and return fresh statuses.

    Only servers on this machine are started, and only if installed; the status says why
    not otherwise. Returns within about `wait` seconds per service that had to start.
    """
    broker, results = _urls(settings, broker_url, redis_url)
    return [
        _ensure(broker, functools.partial(_probe_broker, tls=settings), _start_rabbitmq, wait),
        _ensure(results, functools.partial(_probe_redis, tls=settings), _start_redis, wait),
    ]


# -- probing ------------------------------------------------------------------------------
# A probe also tells whether a server answered at all: a refused login means the server is
# up and the URL is wrong, and starting another server would not help.
_Probe = Callable[[str, float], tuple[ServiceStatus, bool]]


def _probe_broker(url: str, timeout: float, tls: TlsSettings) -> tuple[ServiceStatus, bool]:
    params = pika_parameters(_pika_url(url), tls)
    # One attempt, bounded at every stage: pika's defaults retry and wait far longer.
    params.connection_attempts = 1
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    try:
        with _quiet("pika"):
            connection = pika.BlockingConnection(params)
    except pika.exceptions.ProbableAuthenticationError:
        return _status(
            "rabbitmq", url, False, "login refused: check the user and password in the broker URL"
        ), True
    except pika.exceptions.ProbableAccessDeniedError:
        return _status(
            "rabbitmq", url, False, f"access to virtual host {params.virtual_host!r} refused"
        ), True
    except (pika.exceptions.AMQPError, OSError) as exc:
        return _status("rabbitmq", url, False, f"cannot connect: {_describe(exc)}"), False
    try:
        # server_properties is what the broker sent in Connection.Start; pika keeps it on
        # the underlying connection only.
        props = getattr(connection._impl, "server_properties", None) or {}
        version = props.get("version", b"?")
        version = version.decode() if isinstance(version, bytes) else str(version)
        return _status("rabbitmq", url, True, f"RabbitMQ {version}"), True
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def _probe_redis(url: str, timeout: float, tls: TlsSettings) -> tuple[ServiceStatus, bool]:
    client = redis_from_url(url, tls, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
        version = client.info("server").get("redis_version", "?")
        return _status("redis", url, True, f"Redis {version}"), True
    except redis.exceptions.AuthenticationError:
        return _status(
            "redis", url, False, "login refused: check the password in the Redis URL"
        ), True
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        return _status("redis", url, False, f"cannot connect: {_describe(exc)}"), False
    except redis.exceptions.RedisError as exc:  # it answered, with an error (wrong db, ...)
        return _status("redis", url, False, _describe(exc)), True
    finally:
        client.close()


# -- starting -----------------------------------------------------------------------------

_Starter = Callable[[str], str | None]  # url -> None when launched, else why not


def _ensure(url: str, probe: _Probe, launch: _Starter, wait: float) -> ServiceStatus:
    status, answered = probe(url, CHECK_TIMEOUT)
    if status.ok or answered:
        return status
    host = urlsplit(url).hostname or ""
    if host not in _LOCAL_HOSTS:
        return _status(
            status.name, url, False, f"{status.detail}; {host} is not this machine, start it there"
        )
    refusal = launch(url)
    if refusal is not None:
        return _status(status.name, url, False, refusal)
    deadline = time.monotonic() + wait
    while True:
        status, _ = probe(url, CHECK_TIMEOUT)
        if status.ok or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_INTERVAL)
    if status.ok:
        return _status(status.name, url, True, f"started; {status.detail}")
    return _status(
        status.name, url, False, f"started but not answering after {wait:.0f}s: {status.detail}"
    )


def _start_rabbitmq(url: str) -> str | None:
    binary = shutil.which("rabbitmq-server", path=_SBIN_PATH)
    if binary is None:
        return "rabbitmq-server is not installed: install with apt-get install rabbitmq-server"
    port = urlsplit(_pika_url(url)).port or 5672
    if port != 5672:
        # `rabbitmq-server -detached` listens where the node's config says (5672 by
        # default); starting it would not make this URL answer.
        return (
            f"not answering on port {port}; only a broker on the default port 5672 is started here"
        )
    # Debian's wrapper drops to the rabbitmq user when run as root; anyone else needs sudo
    # (-n: fail at once rather than wait for a password nobody will type).
    command = [binary, "-detached"]
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            return "rabbitmq-server must be started as root (no sudo here)"
        command = [sudo, "-n", *command]
    # A second start while the node is still booting fails harmlessly, so the exit status
    # is not trusted; the connection check that follows decides.
    _run(command)
    return None


def _start_redis(url: str) -> str | None:
    binary = shutil.which("redis-server", path=_SBIN_PATH)
    if binary is None:
        return "redis-server is not installed: install with apt-get install redis-server"
    port = urlsplit(url).port or 6379
    # Nothing is persisted: the job records and results are short-lived, and a dump file in
    # the caller's working directory would only surprise them.
    problem = _run(
        [
            binary,
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
    )
    return f"redis-server failed to start: {problem}" if problem else None


def _run(command: list[str]) -> str | None:
    """Run a command that daemonizes itself; its error text when it fails, else None."""
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,  # both commands fork and return within a second or two
            start_new_session=True,  # the server must not die with this process's terminal
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _describe(exc)
    return (
        None if done.returncode == 0 else (done.stderr.strip() or f"exit status {done.returncode}")
    )


# -- helpers ------------------------------------------------------------------------------


def _urls(settings: ServiceUrls, broker_url: str | None, redis_url: str | None) -> tuple[str, str]:
    return broker_url or str(settings.broker_url), redis_url or str(settings.redis_url)


def _pika_url(url: str) -> str:
    """Rewrite a kombu-style broker URL into one pika reads the same way.

    kombu takes everything after the first slash as the vhost, so `amqp://host//` is vhost
    "/"; pika would read "" there and be refused. pika wants the vhost percent-encoded.
    """
    parts = urlsplit(url)
    scheme = _AMQP_ALIASES.get(parts.scheme, parts.scheme)
    vhost = unquote(parts.path[1:]) or "/"
    return urlunsplit(parts._replace(scheme=scheme, path="/" + quote(vhost, safe="")))


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _status(name: str, url: str, ok: bool, detail: str) -> ServiceStatus:
    return ServiceStatus(name=name, url=_masked(url), ok=ok, detail=detail)


def _describe(exc: BaseException) -> str:
    # pika's connection errors often carry their cause only in args, and str() is empty.
    text = (str(exc) or repr(exc.args)) if exc.args else str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a library's own error logging while we probe; the status carries the error.

    pika logs every refused connection at ERROR, which would bury `genq services start`'s
    output under one traceback per poll while RabbitMQ boots.
    """
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(previous)
