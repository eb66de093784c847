"""A TCP relay between producers and a real broker that a test cuts on cue.

It stands for the network: the broker behind it is a real RabbitMQ. Cutting a producer's
connection by timing (a signal to the broker "soon") could land before or after a batch;
the relay cuts *inside* one, deterministically:

- `arm(after_bytes=N)`: once a connection has carried N bytes towards the broker (so it is
  publishing, part-way through a batch), the relay holds back the rest of that connection's
  bytes, waits until the broker has sent something back (a confirm of what got through), and
  then cuts every connection. So the broker has a part of the batch, some of it confirmed,
  and the producer cannot know about the rest.
- `stay_down=True` refuses every connection after the cut until `up()`: an outage longer
  than the producer's patience.

Connections through it are counted, so a test can tell the producer really reconnected."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from genq.local import free_port

__all__ = ["CuttableLink"]

# A confirm (basic.ack) frame is 21 bytes; a heartbeat is 8. Waiting for this many bytes back
# from the broker after holding the stream means a confirm (or more) came, not a heartbeat.
_CONFIRM_BYTES = 21
# Bounded wait for that confirm: the broker fsyncs persistent messages before confirming.
_CONFIRM_WAIT = 30.0
_CHUNK = 65536


@dataclass
class _Pair:
    client: socket.socket
    server: socket.socket
    up_bytes: int = 0
    armed_from: int = 0
    """`up_bytes` when the relay was armed: the cut counts the bytes sent since."""
    down_bytes: int = 0
    held_at_down: int | None = None
    """`down_bytes` when the relay began holding this connection's stream back."""
    confirmed: threading.Event = field(default_factory=threading.Event)
    cut: bool = False


class CuttableLink:
    def __init__(self, broker_port: int) -> None:
        self._broker_port = broker_port
        self.port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._after: int | None = None
        self._stay_down = False
        self._down = False
        self.cuts = 0
        self.connections = 0
        self.connections_after_cut = 0
        self.cut_done = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, name="link-accept", daemon=True).start()

    def arm(self, *, after_bytes: int, stay_down: bool = False) -> None:
        with self._lock:
            self._after, self._stay_down = after_bytes, stay_down
            for pair in self._pairs:
                pair.armed_from = pair.up_bytes

    def up(self) -> None:
        self._down = False

    def close(self) -> None:
        self._listener.close()
        self._cut_all()

    # -- relaying ----------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self._down:
                client.close()  # the broker is unreachable, as far as the producer knows
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self._broker_port))
            except OSError:
                client.close()
                continue
            pair = _Pair(client, server)
            with self._lock:
                self._pairs.append(pair)
                self.connections += 1
                if self.cuts:
                    self.connections_after_cut += 1
            threading.Thread(target=self._pump_up, args=(pair,), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(pair,), daemon=True).start()

    def _pump_up(self, pair: _Pair) -> None:
        while True:
            try:
                data = pair.client.recv(_CHUNK)
            except OSError:
                break
            if not data:
                break
            if pair.cut:
                continue  # drain what the producer still sends until it sees our FIN
            try:
                sent = pair.up_bytes - pair.armed_from
                after = self._after
                if after is not None and sent + len(data) >= after:
                    pair.held_at_down = pair.down_bytes
                    pair.server.sendall(data[: max(0, after - sent)])
                    self._cut_inside(pair)
                    continue
                pair.server.sendall(data)
                pair.up_bytes += len(data)
            except OSError:
                self._cut(pair)
        self._cut(pair)
        pair.client.close()

    def _pump_down(self, pair: _Pair) -> None:
        while True:
            try:
                data = pair.server.recv(_CHUNK)
                if not data:
                    break
                pair.client.sendall(data)
            except OSError:
                break
            pair.down_bytes += len(data)
            held = pair.held_at_down
            if held is not None and pair.down_bytes - held >= _CONFIRM_BYTES:
                pair.confirmed.set()
        self._cut(pair)

    def _cut_inside(self, pair: _Pair) -> None:
        """Hold the rest of this connection's stream, let a confirm come back, then cut."""
        with self._lock:
            if self._after is None:  # another connection got there first
                return
            self._after = None
        pair.confirmed.wait(_CONFIRM_WAIT)
        self._down = self._stay_down
        self.cuts += 1
        self._cut_all()
        self.cut_done.set()

    def _cut_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._cut(pair)

    @staticmethod
    def _cut(pair: _Pair) -> None:
        """Drop the broker's side at once; end the producer's side with a FIN, so it reads
        every byte relayed to it before it sees the connection end (closing a socket with
        unread input would send a reset, and the producer's kernel would throw away
        confirms it had not read yet)."""
        pair.cut = True
        with contextlib.suppress(OSError):
            pair.server.shutdown(socket.SHUT_RDWR)
        pair.server.close()
        with contextlib.suppress(OSError):
            pair.client.shutdown(socket.SHUT_WR)
