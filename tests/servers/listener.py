"""The part the tests' small TCP servers share: a loopback listener served by one thread.

A subclass handles each accepted connection in ``_accepted`` (quickly: start
a thread for anything long) and puts every socket it wants closed at the end
into ``self._open``.  Use as a context manager.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self

HOST = "127.0.0.1"


class LoopbackListener:
    thread_name = "listener"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._open: list[socket.socket] = []
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.1)  # how soon the accepting thread notices a stop
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name=self.thread_name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.close()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by __exit__
                return
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        raise NotImplementedError
