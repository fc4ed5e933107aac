"""An in-process asyncssh SFTP server that drips its replies: no channel timeout ever fires.

paramiko's channel timeout restarts with every packet of channel data, so a
server that sends a reply a byte at a time holds a client that trusts it alone
forever.  This server shows it on 127.0.0.1: any request naming a path that
contains ``drip`` (STAT, OPENDIR/READDIR, READ and WRITE of such a file, RENAME,
REMOVE, MKDIR) is answered with the 4-byte length of a 64 KiB reply, then one
more byte every ``interval`` seconds, until the client closes the channel.
With ``drip_sessions`` set, every new SFTP session drips its version reply the
same way (so opening a channel never completes).

The SSH connection itself stays healthy: global requests (keepalives) and other
channels are answered at once.  Other paths are served from the disk as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import asyncssh

from connectors.transports.base import TransportSettings

from .asyncssh_server import AsyncSSHServer
from .sshd import make_client_key

DRIP_WORD = b"drip"


class DrippingSFTPServer(AsyncSSHServer):
    """Use as a context manager; ``settings()`` gives TransportSettings for its key user (host key pinned)."""

    kind = "asyncssh-drip"

    def __init__(self, *, interval: float = 0.2) -> None:
        super().__init__()
        self.interval = interval
        self.drip_sessions = False
        self.drips = 0  # replies (or sessions) dripped so far
        self._stopping = threading.Event()
        self._connections: list[asyncssh.SSHServerConnection] = []
        self._tasks: set[asyncio.Task] = set()  # session drips: a task needs a reference until it ends
        self._client_key = make_client_key("ed25519")
        self.authorize(self._client_key.public_line)

    def settings(self, **overrides: object) -> TransportSettings:
        values: dict[str, object] = {
            "kind": "sftp", "host": self.host, "port": self.port, "username": self.key_user.name,
            "private_key": self._client_key.private_key, "host_key": self.host_keys["ed25519"],
            "connect_timeout": 5.0, "operation_timeout": 1.0,
        }
        values.update(overrides)
        return TransportSettings(**values)  # type: ignore[arg-type]

    # -- lifecycle -----------------------------------------------------------------
    def _server_factory(self) -> asyncssh.SSHServer:
        server = super()._server_factory()
        made = server.connection_made

        def connection_made(conn: asyncssh.SSHServerConnection) -> None:  # kept, to close them on stop
            self._connections.append(conn)
            made(conn)

        server.connection_made = connection_made  # type: ignore[method-assign]
        return server

    async def _listen(self) -> None:
        self._acceptor = await asyncssh.listen(
            self.host, 0, server_host_keys=self._server_keys, server_factory=self._server_factory,
            sftp_factory=self._sftp_server, allow_scp=False, process_factory=None,
        )  # fmt: skip
        self.port = self._acceptor.sockets[0].getsockname()[1]

    def _sftp_server(self, chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
        """The SFTP server of one session (a hook for subclasses)."""
        return _DrippingSFTP(chan, self)

    def stop(self) -> None:
        self._stopping.set()  # every drip ends within one interval
        if self._thread.is_alive():

            async def _close_all() -> None:
                for conn in self._connections:
                    conn.close()
                for conn in self._connections:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.wait_closed(), 5)
                # Whatever still runs (SFTP handlers, drips) ends here, not as "destroyed but pending".
                tasks = asyncio.all_tasks() - {asyncio.current_task()}
                for task in tasks:
                    task.cancel()
                if tasks:
                    await asyncio.wait(tasks, timeout=5)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_close_all(), self._loop).result(10)
        super().stop()

    # -- dripping ------------------------------------------------------------------
    async def drip(self, chan: asyncssh.SSHServerChannel) -> None:
        """Promise a 64 KiB reply, then send it a byte at a time until the channel closes."""
        self.drips += 1
        try:
            chan.write(b"\x00\x01\x00\x00")
            while not chan.is_closing() and not self._stopping.is_set():
                await asyncio.sleep(self.interval)
                if not chan.is_closing():
                    chan.write(b"\x00")
        except (OSError, asyncssh.Error):
            pass  # the client went away: what the tests want
        raise asyncssh.SFTPFailure("stopped dripping")

    def start_drip(self, chan: asyncssh.SSHServerChannel) -> None:
        task = asyncio.get_running_loop().create_task(self.drip(chan))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no "never retrieved" noise


class _DrippingSFTP(asyncssh.SFTPServer):
    """The local file system, except for requests naming a ``drip`` path."""

    def __init__(self, chan: asyncssh.SSHServerChannel, owner: DrippingSFTPServer) -> None:
        super().__init__(chan)
        self._owner = owner
        if owner.drip_sessions:  # written before the client's INIT is even read: the version reply never comes
            owner.start_drip(chan)

    async def _maybe_drip(self, *paths: Any) -> None:
        names = [getattr(p, "name", p) for p in paths]  # a file object stands for its path
        if any(DRIP_WORD in (n if isinstance(n, bytes) else str(n).encode()) for n in names):
            await self._owner.drip(self.channel)

    async def stat(self, path: bytes) -> Any:
        await self._maybe_drip(path)
        return super().stat(path)

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        await self._maybe_drip(path)
        async for name in super().scandir(path):
            yield name

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        await self._maybe_drip(file_obj)
        return super().read(file_obj, offset, size)  # type: ignore[return-value]

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        await self._maybe_drip(file_obj)
        return super().write(file_obj, offset, data)  # type: ignore[return-value]

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._maybe_drip(oldpath, newpath)
        super().rename(oldpath, newpath)

    async def remove(self, path: bytes) -> None:
        await self._maybe_drip(path)
        super().remove(path)

    async def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        await self._maybe_drip(path)
        super().mkdir(path, attrs)
