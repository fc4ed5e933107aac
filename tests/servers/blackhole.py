"""A TCP server that accepts connections and never says a word.

It shows what no mock can: a client stuck waiting for a banner or a reply
must give up within its configured timeout.
"""

from __future__ import annotations

import socket

from .listener import LoopbackListener


class BlackholeServer(LoopbackListener):
    """Listens on a random loopback port; accepted sockets are held open, silent."""

    thread_name = "blackhole"

    def _accepted(self, conn: socket.socket) -> None:
        self._open.append(conn)


def closed_port() -> int:
    """A loopback port with nothing listening (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
