"""An SFTP directory read a READDIR at a time, as far as its reader goes; the handle closed however it ends.

paramiko's ``listdir_attr`` keeps every entry before it returns and ``listdir_iter`` sends 50 READDIRs ahead, so a
server whose listing never ends grows either without limit (480 MB in one ``list_dir``).  Here one READDIR is in
flight at a time, its reply is parsed entry by entry as they are taken, and closing the generator (the reader has
enough) sends the handle's CLOSE and waits for its answer, so the channel is in step for the next request.

A reply is one SFTP packet, which paramiko reads whole and refuses over 16 MiB.  Its entries are parsed here with
bounds checks: paramiko's ``Message`` pads a short packet with zeros, so a forged entry count (or count of extended
attributes) would go on yielding entries, or spinning, long after the packet ended.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from stat import S_ISREG
from typing import NamedTuple

from paramiko import SFTPClient
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR, SFTPError

from .base import RemoteFile

# SFTP v3 attribute flags (draft-ietf-secsh-filexfer-02, 5)
_SIZE, _UIDGID, _PERMISSIONS, _ACMODTIME, _EXTENDED = 0x1, 0x2, 0x4, 0x8, 0x80000000


class Entry(NamedTuple):
    """One directory entry: its name ("" when it is not UTF-8) and, for a regular file, the file."""

    name: str
    file: RemoteFile | None


class _Reply:
    """A cursor over one reply's bytes that refuses to read past their end."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def skip(self, count: int) -> int:
        """Move past ``count`` bytes; returns where they start."""
        start, self.at = self.at, self.at + count
        if self.at > len(self.data):
            raise SFTPError("a READDIR reply ends in the middle of an entry")
        return start

    def uint32(self) -> int:
        return struct.unpack_from(">I", self.data, self.skip(4))[0]

    def uint64(self) -> int:
        return struct.unpack_from(">Q", self.data, self.skip(8))[0]

    def string(self) -> bytes:
        count = self.uint32()
        start = self.skip(count)
        return self.data[start:start + count]


def _entry(reply: _Reply) -> Entry:
    raw = reply.string()
    reply.skip(reply.uint32())  # the "ls -l" long name: not needed, never copied
    flags = reply.uint32()
    size = reply.uint64() if flags & _SIZE else 0
    if flags & _UIDGID:
        reply.skip(8)
    mode = reply.uint32() if flags & _PERMISSIONS else None
    mtime = None
    if flags & _ACMODTIME:
        reply.skip(4)  # atime
        mtime = float(reply.uint32())
    if flags & _EXTENDED:
        for _ in range(reply.uint32()):  # each pair takes 8 bytes at least: a forged count ends at the packet's end
            reply.skip(reply.uint32())
            reply.skip(reply.uint32())
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:  # no ack file has such a name, and no database row could hold it: passed over
        return Entry("", None)
    regular = mode is not None and S_ISREG(mode)
    return Entry(name, RemoteFile(name, size, mtime) if regular else None)


def _entries(data: bytes) -> Iterator[Entry]:
    reply = _Reply(data)
    for _ in range(reply.uint32()):  # each entry takes 12 bytes at least: a forged count ends at the packet's end
        yield _entry(reply)


def read_dir(sftp: SFTPClient, path: str) -> Iterator[Entry]:
    """The entries of directory ``path`` in the server's order (``.`` and ``..`` too, where it lists them).

    Use it closed (``contextlib.closing``) inside the operation's deadline: stopping early closes the handle.
    """
    kind, msg = sftp._request(CMD_OPENDIR, sftp._adjust_cwd(path))
    if kind != CMD_HANDLE:
        raise SFTPError("expected a handle")
    handle = msg.get_binary()
    try:
        while True:
            try:
                kind, msg = sftp._request(CMD_READDIR, handle)
            except EOFError:  # SSH_FX_EOF: the end of the directory
                break
            if kind != CMD_NAME:
                raise SFTPError("expected a NAME reply")
            yield from _entries(msg.get_remainder())
    except GeneratorExit:  # the reader has enough: the handle is still closed, in step with the channel
        sftp._request(CMD_CLOSE, handle)
        raise
    sftp._request(CMD_CLOSE, handle)
