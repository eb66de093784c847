"""A RabbitMQ node of the test's own, to stop and restart at will.

The machine's RabbitMQ (5672) serves every other test and engineer: a test that restarts a
broker must never touch it. This node runs the same installed server under its own node
name, ports, data directory (mnesia), logs and config, so it reads nothing of the system
node's `/etc/rabbitmq` (whose listener is 5672) and enables no plugins (no management port
to collide on). It shares epmd, which is made for many nodes on one host.

A restart is a stop and a start on the same data directory, so durable queues and
persistent messages survive it exactly as they do on a production node.

On a root machine the node runs as the `rabbitmq` user, as the Debian package runs it, so
it and `rabbitmqctl` share that user's Erlang cookie; elsewhere both run as the caller."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from genq.local import free_port

__all__ = ["PrivateRabbit", "private_rabbit"]

# Where Debian's package keeps the real scripts; its /usr/sbin wrappers would write the
# system node's startup log, so they are not used.
_DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")
# Booting a node takes a few seconds, longer on a machine busy with vLLM.
_BOOT_TIMEOUT = 120
_STOP_TIMEOUT = 60


def _tool(name: str) -> str:
    path = _DEBIAN_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: the broker tests need a RabbitMQ server")
    return found


def _broker_user() -> str | None:
    """The user to run the node as: `rabbitmq` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        return None
    return "rabbitmq"


class PrivateRabbit:
    """One private node; `url` is what producers and workers use to reach it."""

    def __init__(self, base: Path) -> None:
        self.node = f"genqtest-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self._base = base
        self._user = _broker_user()
        self._server: subprocess.Popen[bytes] | None = None
        config = base / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users.guest = true\n")
        plugins = base / "enabled_plugins"
        plugins.write_text("[].\n")
        env_file = base / "rabbitmq-env.conf"  # empty: not the system node's NODENAME
        env_file.write_text("")
        (base / "mnesia").mkdir()
        (base / "log").mkdir()
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            for path in [base, *base.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_PID_FILE": str(base / "node.pid"),
            "RABBITMQ_CONF_ENV_FILE": str(env_file),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        if self._user is not None:
            self.env["HOME"] = pwd.getpwnam(self._user).pw_dir  # its Erlang cookie

    def _as_user(self, argv: list[str]) -> list[str]:
        if self._user is None:
            return argv
        # runuser keeps the environment (the RABBITMQ_* variables above).
        return ["runuser", "-u", self._user, "--", *argv]

    def ctl(self, *args: str, timeout: float = _STOP_TIMEOUT) -> str:
        """Run `rabbitmqctl -n <this node> ARGS`; its output, or the test fails."""
        done = subprocess.run(
            self._as_user([_tool("rabbitmqctl"), "-n", self.node, *args]),
            env=self.env,
            capture_output=True,
            timeout=timeout,
            cwd=self._base,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"rabbitmqctl {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout.decode()}{done.stderr.decode()}"
            )
        return done.stdout.decode()

    def start(self) -> PrivateRabbit:
        assert self._server is None or self._server.poll() is not None, "already running"
        log = (self._base / "log" / "server.out").open("ab")
        self._server = subprocess.Popen(
            self._as_user([_tool("rabbitmq-server")]),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._base,
            start_new_session=True,
        )
        log.close()
        try:
            # `wait` (unlike await_startup) also waits for the node to exist at all.
            self.ctl(
                "wait",
                str(self._base / "node.pid"),
                "--timeout",
                str(_BOOT_TIMEOUT),
                timeout=_BOOT_TIMEOUT + 30,
            )
        except AssertionError as exc:
            self.kill()
            raise AssertionError(f"{exc}\nserver output:\n{self.tail()}") from None
        return self

    def stop(self) -> None:
        """Stop the node cleanly (as `systemctl stop` does); its data stays for a restart."""
        if self._server is None or self._server.poll() is not None:
            return
        try:
            self.ctl("stop")
            self._server.wait(_STOP_TIMEOUT)
        except (AssertionError, subprocess.TimeoutExpired):
            self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the node's whole process group: the teardown of last resort."""
        if self._server is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._server.pid, signal.SIGKILL)
        self._server.wait(30)

    def tail(self, lines: int = 30) -> str:
        path = self._base / "log" / "server.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def private_rabbit() -> Iterator[PrivateRabbit]:
    """A private RabbitMQ node for this module; stopped and deleted at teardown, whatever
    the tests did to it (a failing test leaves no node behind)."""
    base = Path(tempfile.mkdtemp(prefix="genq-rabbit-"))
    os.chmod(base, 0o755)
    rabbit = PrivateRabbit(base)
    try:
        rabbit.start()
        yield rabbit
    finally:
        rabbit.stop()
        rabbit.kill()
        # epmd forgets the node by itself once it is down.
        shutil.rmtree(base, ignore_errors=True)
