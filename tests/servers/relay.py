"""A TCP relay on 127.0.0.1 whose server-to-client direction can be slowed to a trickle, held, or made late.

In front of a real sshd it shows what a slow or stuck network does to a client
that is already logged in: ``throttle(bytes_per_second)`` forwards the server's
bytes at that rate (TCP back-pressure makes the server wait, as on a slow link),
``throttle(0)`` forwards nothing more, ``throttle(None)`` is full speed again.
``lag(seconds)`` forwards each burst the server sends that much later: a slow
partner that answers everything, correctly, each round trip seconds late.
The client-to-server direction always runs at full speed.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from .listener import HOST, LoopbackListener

TICK = 0.05  # a throttled pump forwards rate * TICK bytes per tick


class Relay(LoopbackListener):
    """Use as a context manager; connect to ``port`` instead of the target's."""

    thread_name = "relay"

    def __init__(self, target_port: int) -> None:
        super().__init__()
        self.target_port = target_port
        self.rate: float | None = None  # server-to-client bytes per second; None: unlimited, 0: hold
        self.delay = 0.0  # seconds each server-to-client burst is held before it is forwarded

    def throttle(self, bytes_per_second: float | None) -> None:
        self.rate = bytes_per_second

    def lag(self, seconds: float) -> None:
        self.delay = seconds

    def _accepted(self, client: socket.socket) -> None:
        self._open.append(client)
        try:
            server = socket.create_connection((HOST, self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        client.settimeout(None)
        self._open.append(server)
        for src, dst, slowed in ((client, server, False), (server, client, True)):
            threading.Thread(target=self._pump, args=(src, dst, slowed), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, slowed: bool) -> None:
        try:
            while not self._stop.is_set():
                if not select.select([src], [], [], 0.1)[0]:
                    continue
                rate = self.rate if slowed else None  # read after the wait: a throttle applies to what came meanwhile
                if rate == 0:  # held: read nothing, so the server's sends back up
                    self._stop.wait(TICK)
                    continue
                data = src.recv(65536 if rate is None else max(1, int(rate * TICK)))
                if not data:
                    break
                if slowed and self.delay:
                    self._stop.wait(self.delay)
                dst.sendall(data)
                if rate is not None:
                    self._stop.wait(TICK)
        except (OSError, ValueError):  # ValueError: select on a socket closed by __exit__
            pass
        finally:  # either side gone: end both directions
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
