"""A Redis server of a test's own, persisted as deploy/redis.conf configures (AOF), that the
test may stop and start again. Never the shared Redis on 6379: other tests and CI use it.
Its fixture, `private_redis`, is registered in conftest.py."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from genq.local import free_port, wait_for

__all__ = ["PrivateRedis", "private_redis"]


class PrivateRedis:
    """One `redis-server` on a free loopback port with its data in `directory`. Stopping it
    and starting it again reuses the directory, so what it persisted comes back."""

    def __init__(self, directory: Path, *, fsync: str = "everysec") -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        server = shutil.which("redis-server")
        assert server, "redis-server is not installed (genq services start installs it)"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
                "--save",
                "",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=60, what="the private Redis to answer", interval=0.1)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"redis-server exited with {self.proc.returncode}:\n{self.log_tail()}"
            )
        r = redis.Redis.from_url(self.url, socket_timeout=2)
        try:
            return bool(r.ping())  # LOADING (replaying the AOF) raises: not ready yet
        except redis.RedisError:
            return False
        finally:
            r.close()

    def shutdown(self) -> None:
        """SHUTDOWN: Redis writes and fsyncs its AOF, then exits (a clean restart's first half)."""
        r = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            r.shutdown()
        except redis.ConnectionError:
            pass  # the server closed the connection on its way out
        finally:
            r.close()
        self._wait_exit()

    def kill(self) -> None:
        """kill -9: Redis gets no chance to write anything more (a crash)."""
        assert self.proc is not None
        self.proc.kill()
        self._wait_exit()

    def _wait_exit(self) -> None:
        assert self.proc is not None
        self.proc.wait(30)

    def stop(self) -> None:
        """Teardown: stop it whatever state the test left it in."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def log_tail(self, lines: int = 20) -> str:
        log = self.directory / "redis.log"
        return (
            "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            if log.exists()
            else "(no log)"
        )


@pytest.fixture
def private_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private Redis with AOF; `@pytest.mark.parametrize("private_redis", ["always"],
    indirect=True)` picks the fsync policy (default everysec, as deploy/redis.conf)."""
    fsync = getattr(request, "param", "everysec")
    server = PrivateRedis(tmp_path / "redis", fsync=fsync).start()
    try:
        yield server
    finally:
        server.stop()
