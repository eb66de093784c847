"""Starting and stopping a local fleet: `genq worker` and Flower as subprocesses, exactly
as a user starts them. Used by `genq demo`, `genq bench` and the integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from genq import names
from genq.settings import FleetSettings

__all__ = ["FlowerProcess", "GatewayProcess", "WorkerProcess", "free_port", "wait_for"]

# vLLM on CPU takes ~30 s to start the tiny model eagerly, minutes with torch.compile.
WORKER_START_TIMEOUT = 300.0


def wait_for(
    predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """One `genq worker` subprocess serving `model_name` from `model_path`. Its engine
    options default to a quick start (eager mode) and a small context, for tests and demos."""

    def __init__(
        self,
        *,
        model_path: Path,
        model_name: str,
        env: dict[str, str],
        log_dir: Path,
        max_num_seqs: int = 16,
        max_model_len: int = 512,
        extra: list[str] | None = None,
        name: str = "w1",
        cpus: str | None = None,
    ) -> None:
        self.hostname = f"{name}-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
        self.log_path = log_dir / f"worker-{name}-{time.monotonic_ns()}.log"
        self.args = [
            sys.executable,
            "-m",
            "genq.cli",
            "worker",
            "--loglevel",
            "INFO",
            "--hostname",
            self.hostname,
            "--model",
            str(model_path),
            "--served-model-name",
            model_name,
            "--max-num-seqs",
            str(max_num_seqs),
            "--enforce-eager",
            "--max-model-len",
            str(max_model_len),
            *(extra or []),
        ]
        if cpus is not None:
            self.args[4:4] = ["--cpus", cpus]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        r = redis.Redis.from_url(self.env.get("GENQ_REDIS_URL", FleetSettings().redis_url))

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            return bool(r.exists(names.worker_stats_key(self.hostname)))

        wait_for(ready, timeout=WORKER_START_TIMEOUT, what="the worker to be ready", interval=0.3)
        r.close()

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120.0) -> int:
        """Stop the worker as a supervisor does (a signal to its main process), then make
        sure nothing it started (vLLM's engine processes) is left."""
        if self.proc is None:
            return 0
        try:
            if sig == signal.SIGKILL:
                os.killpg(self.proc.pid, sig)  # a crash takes the engine processes too
            else:
                os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait(30)
        self._reap_group()
        self._log.close()
        return code

    def kill(self) -> None:
        """kill -9 the whole worker (and its engine processes), as a crash would."""
        self.stop(signal.SIGKILL, timeout=30)

    def _reap_group(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftover engine processes, if any


class FlowerProcess:
    def __init__(self, *, env: dict[str, str], port: int, log_dir: Path) -> None:
        self.port = port
        self.log_path = log_dir / "flower.log"
        self.args = [sys.executable, "-m", "genq.cli", "flower", "--port", str(port)]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> FlowerProcess:
        import requests

        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up() -> bool:
            try:
                return (
                    requests.get(f"http://127.0.0.1:{self.port}/api/workers", timeout=1).status_code
                    == 200
                )
            except requests.RequestException:
                return False

        wait_for(up, timeout=60, what="Flower to answer", interval=0.3)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
            self._log.close()


class GatewayProcess:
    """`genq gateway` as a subprocess, as a user starts it (one process: its own cores and
    file descriptors, apart from whoever loads it)."""

    def __init__(
        self, *, env: dict[str, str], port: int, log_dir: Path, log_level: str = "warning"
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"gateway-{port}.log"
        self.args = [
            sys.executable,
            "-m",
            "genq.cli",
            "gateway",
            "--port",
            str(port),
            "--log-level",
            log_level,
        ]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.name = ""
        """Its Redis connections' name (CLIENT LIST), from /healthz."""

    def start(self) -> GatewayProcess:
        import requests

        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited; log: {self.log_path}")
            try:
                reply = requests.get(f"{self.url}/healthz", timeout=2)
            except requests.RequestException:
                return False
            if reply.status_code == 200:
                self.name = reply.json()["gateway"]
            return reply.status_code == 200

        wait_for(up, timeout=60, what="the gateway to answer", interval=0.3)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            self._log.close()
