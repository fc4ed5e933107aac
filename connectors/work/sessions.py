"""One open transport for a job: opened on first use, dropped after a fault, closed or kept at the end.

A delivery drains in runs of a few hundred exports and a command may poll again and again; logging in again
for every run cost a round trip per step of the handshake (and a new SFTP channel per lane).  The engine
keeps the session of a connection polled often (``SessionCache``) for its next job in the same process.
"""

from __future__ import annotations

import threading

from ..models import ERPConnection
from ..transports import ErrorCode, Transport, TransportError, TransportSettings, get_transport


class Session:
    def __init__(self, connection: ERPConnection, *, transport: Transport | None = None) -> None:
        self.connection = connection
        self._transport = transport
        self.faulted = False  # a fault of the connection itself happened: never kept for another job
        self.aborted = False  # cut from another thread: nothing more is opened on it
        self._opening: Transport | None = None
        self.made_dirs: set[str] = set()  # directories known to exist on this connection (made once)
        self._lock = threading.Lock()  # abort() comes from the watchdog thread

    def transport(self) -> Transport:
        """The open transport; opens it (raising its TransportError) when there is none."""
        if self._transport is None:
            transport = get_transport(self.connection.transport_settings())
            with self._lock:
                if self.aborted:
                    raise _cut()
                self._opening = transport  # a cut now reaches the socket being opened
            try:
                transport.open()  # closes what it opened itself when it fails
            finally:
                with self._lock:
                    self._opening = None
            with self._lock:
                if not self.aborted:
                    self._transport = transport
            if self._transport is None:  # cut just as it finished opening
                transport.close()
                raise _cut()
        return self._transport

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    def ensure_dirs(self, *paths: str) -> None:
        """Create these directories once per session (a poll files acks into them)."""
        for path in paths:
            if path not in self.made_dirs:
                self.transport().makedirs(path)
                self.made_dirs.add(path)

    def abort(self) -> None:
        """Cut the connection from another thread (the job's budget ran out); never blocks."""
        self.faulted = True
        with self._lock:
            self.aborted = True
            transport = self._transport or self._opening
        if transport is not None:
            transport.abort()

    def drop(self) -> None:
        """After a fault of the connection itself: the next run opens a fresh one."""
        self.faulted = True
        self.close()

    def close(self) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
        self.made_dirs.clear()
        if transport is not None:
            transport.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _cut() -> TransportError:
    return TransportError("the connection was cut (its job's time is up)", code=ErrorCode.TIMEOUT)


class SessionCache:
    """Sessions parked between jobs, per connection: for connections polled at least every ``keep_seconds``.

    A parked session is handed out again only if its transport is still alive and was opened with exactly
    the connection's current settings (host, port, user, secrets, pinned key): an admin's edit never reaches
    an old session.  At most ``size`` are parked; one idle longer than ``keep_seconds`` is closed.
    """

    def __init__(self, *, size: int, keep_seconds: float) -> None:
        self.size = size
        self.keep_seconds = keep_seconds
        self._parked: dict[int, tuple[Transport, TransportSettings, float, set[str]]] = {}
        self._lock = threading.Lock()
        self.reused = 0  # tallies for the engine's heartbeat and the bench
        self.opened = 0

    def take(self, connection: ERPConnection, *, now: float) -> Session:
        with self._lock:
            parked = self._parked.pop(connection.pk, None)
        if parked is not None:
            transport, settings, _since, made = parked
            if settings == connection.transport_settings() and transport.is_alive():
                self.reused += 1
                session = Session(connection, transport=transport)
                session.made_dirs = made
                return session
            transport.close()
        self.opened += 1
        return Session(connection)

    def give_back(self, session: Session, *, now: float) -> None:
        """Park the session if it is worth keeping, else close it."""
        conn = session.connection
        transport = session._transport
        keep = (transport is not None and not session.faulted and self.size > 0
                and conn.poll_interval_seconds <= self.keep_seconds)
        if keep:
            assert transport is not None
            with self._lock:
                if conn.pk not in self._parked and len(self._parked) < self.size:
                    transport.keep_alive()
                    self._parked[conn.pk] = (transport, transport.settings, now, set(session.made_dirs))
                    session._transport = None
                    return
        session.close()

    def close_idle(self, *, now: float) -> None:
        with self._lock:
            stale = [pk for pk, (_t, _s, since, _m) in self._parked.items() if now - since > self.keep_seconds]
            closing = [self._parked.pop(pk)[0] for pk in stale]
        for transport in closing:
            transport.close()

    def close_all(self) -> None:
        with self._lock:
            closing = [t for t, _s, _since, _m in self._parked.values()]
            self._parked.clear()
        for transport in closing:
            transport.close()

    def __len__(self) -> int:
        return len(self._parked)
