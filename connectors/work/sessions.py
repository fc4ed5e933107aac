"""One open transport for the runs of one task: opened on first use, dropped after a fault, always closed.

A delivery task drains in runs of a few hundred exports and a poll task may
poll again and again within its minute; logging in again for every run cost
a round trip per step of the handshake (and a new SFTP channel per lane).
"""

from __future__ import annotations

from ..models import ERPConnection
from ..transports import Transport, get_transport


class Session:
    def __init__(self, connection: ERPConnection) -> None:
        self.connection = connection
        self._transport: Transport | None = None

    def transport(self) -> Transport:
        """The open transport; opens it (raising its TransportError) when there is none."""
        if self._transport is None:
            transport = get_transport(self.connection.transport_settings())
            transport.open()  # closes what it opened itself when it fails
            self._transport = transport
        return self._transport

    def drop(self) -> None:
        """After a fault of the connection itself: the next run opens a fresh one."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    close = drop

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
