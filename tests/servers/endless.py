"""Servers whose directory listings never end: FTP's MLSD (or NLST) and SFTP's READDIR.

A client that collects a whole listing before it looks at it grows until it dies
(2.9 GB for an FTP MLSD, 480 MB for an SFTP listing, within one operation
deadline).  These servers show it on 127.0.0.1: a listing of any path containing
``endless`` sends regular files (``ack_000000001.json``, …) as fast as the client
takes them, until it stops reading.  Everything else works as in the dripping
servers they build on, so the client logs in and works normally.
"""

from __future__ import annotations

import itertools
import socket
import stat
from collections.abc import AsyncIterator

import asyncssh

from .drip_sftp import DrippingSFTPServer, _DrippingSFTP
from .dripping import LOGIN_REPLIES, DrippingFTPServer

ENDLESS_WORD = "endless"
_FILE_MODE = stat.S_IFREG | 0o644
_MTIME = 1_700_000_000


class EndlessFTPServer(DrippingFTPServer):
    """MLSD and NLST of an ``endless`` path never end; ``mlsd=False`` refuses MLSD (clients fall back to NLST).

    SIZE and MDTM answer for any name, as for a small file.
    """

    replies = {**LOGIN_REPLIES, "SIZE": "213 3", "MDTM": "213 20231114221320"}

    def __init__(self, *, mlsd: bool = True) -> None:
        super().__init__("data")
        self.transfers = ("MLSD", "NLST") if mlsd else ("NLST",)

    def _payload(self, data: socket.socket, verb: str, path: str) -> None:
        if ENDLESS_WORD not in path:
            super()._payload(data, verb, path)
            return
        facts = "type=file;size=3;modify=20231114221320; " if verb == "MLSD" else ""
        for start in itertools.count(1, 1000):  # a thousand lines a write: the client's reading is the bottleneck
            block = "".join(f"{facts}ack_{n:09d}.json\r\n" for n in range(start, start + 1000))
            try:
                data.sendall(block.encode())
            except OSError:  # the client stopped reading: what the tests want
                return


class _EndlessSFTP(_DrippingSFTP):
    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        if ENDLESS_WORD.encode() not in path:
            async for name in super().scandir(path):
                yield name
            return
        for dot in (b".", b".."):
            yield asyncssh.SFTPName(dot, b"drwxr-xr-x . ..", asyncssh.SFTPAttrs(permissions=stat.S_IFDIR | 0o755))
        attrs = asyncssh.SFTPAttrs(size=3, permissions=_FILE_MODE, atime=_MTIME, mtime=_MTIME)
        for n in itertools.count(1):  # the long name given: asyncssh would format one per entry
            yield asyncssh.SFTPName(f"ack_{n:09d}.json".encode(), b"-rw-r--r-- 1 ack", attrs)


class EndlessSFTPServer(DrippingSFTPServer):
    """READDIR of an ``endless`` path never ends; ``settings()`` as for the dripping server."""

    def _sftp_server(self, chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
        return _EndlessSFTP(chan, self)
