"""Several SFTP requests in flight on one channel: a batch of small reads or renames in a round trip or two.

paramiko's ``SFTPClient`` waits for each reply before it sends the next
request, so every file costs a lane a few round trips.  Its lower layer sends
a request (``_async_request``) and reads a given reply (``_read_response``).
An SFTP server handles a channel's requests in order (OpenSSH's sftp-server
one by one; the transport already relies on it for CLOSEs it does not wait
for), so a whole batch is sent first and its replies are read in order: one
round trip per step for the batch instead of per file.  Over a 20 ms link a
batch of 25 acks is read in 40 ms instead of a second.
"""

from __future__ import annotations

import struct

from paramiko import SFTPAttributes, SFTPClient
from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_READ,
    CMD_RENAME,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    int64,
)

_WRITE_SIZE = 32768  # bytes per WRITE request, as paramiko sends them

Reply = tuple[int, Message] | OSError  # (reply type, reply), or the error status the server gave that request


def _pipelined(sftp: SFTPClient, requests: list[tuple[int, tuple]]) -> list[Reply]:
    """Send every request, then read each reply in order.

    The requests go out in one write, as paramiko's ``_async_request`` frames them: SFTP is a byte
    stream on its channel, so a batch costs an SSH packet or two instead of one per request (each
    packet is encrypted, signed and sent under the transport's locks by the lane's thread).
    An error status answers its own request only (the rest go on); a lost connection raises.
    """
    frames, nums = [], []
    with sftp._lock:  # paramiko's own lock for request numbers
        for kind, args in requests:
            num = sftp.request_number
            msg = Message()
            msg.add_int(num)
            for item in args:
                if isinstance(item, int64):
                    msg.add_int64(item)
                elif isinstance(item, int):
                    msg.add_int(item)
                elif isinstance(item, SFTPAttributes):
                    item._pack(msg)
                else:
                    msg.add_string(item)
            body = msg.asbytes()
            frames.append(struct.pack(">IB", len(body) + 1, kind) + body)
            sftp._expecting[num] = type(None)  # as _async_request: nobody else waits for this reply
            sftp.request_number = num + 1
            nums.append(num)
    sftp._write_all(b"".join(frames))
    replies: list[Reply] = []
    for num in nums:
        try:
            replies.append(sftp._read_response(num))
        except EOFError as err:  # paramiko's word for an SSH_FX_EOF status
            replies.append(OSError(f"end of file: {err}"))
        except OSError as err:
            replies.append(err)
    return replies


def _payload(reply: Reply, kind: int) -> Message | OSError:
    """The reply's message when it is of the ``kind`` a success has; else the error."""
    if isinstance(reply, OSError):
        return reply
    return reply[1] if reply[0] == kind else OSError(f"unexpected SFTP reply type {reply[0]}")


def _open(sftp: SFTPClient, paths: list[str], flags: int) -> list[Message | OSError]:
    replies = _pipelined(sftp, [(CMD_OPEN, (sftp._adjust_cwd(path), flags, SFTPAttributes())) for path in paths])
    return [_payload(reply, CMD_HANDLE) for reply in replies]


def read_small(sftp: SFTPClient, files: list[tuple[str, int]]) -> list[bytes | OSError]:
    """The first ``size`` bytes of each ``(path, size)``, sizes at most one READ.

    Two round trips for the batch: the OPENs, then the READs with the CLOSEs behind them.
    """
    opened = _open(sftp, [path for path, _size in files], SFTP_FLAG_READ)
    live = [(reply.get_binary(), size)
            for reply, (_path, size) in zip(opened, files, strict=True) if isinstance(reply, Message)]
    replies = _pipelined(sftp, [(CMD_READ, (handle, int64(0), size)) for handle, size in live]
                         + [(CMD_CLOSE, (handle,)) for handle, _size in live])
    data = iter(replies[:len(live)])
    results: list[bytes | OSError] = []
    for reply in opened:
        read = reply if isinstance(reply, OSError) else _payload(next(data), CMD_DATA)
        results.append(read if isinstance(read, OSError) else read.get_string())
    return results


def rename_all(sftp: SFTPClient, pairs: list[tuple[str, str]]) -> list[OSError | None]:
    """SSH_FXP_RENAME of each ``(src, dst)``: None where it worked, the server's refusal where not."""
    replies = _pipelined(sftp, [(CMD_RENAME, (sftp._adjust_cwd(src), sftp._adjust_cwd(dst))) for src, dst in pairs])
    return [reply if isinstance(reply, OSError) else None for reply in replies]


def write_files(sftp: SFTPClient, files: list[tuple[str, bytes]]) -> list[int | OSError]:
    """Create (or truncate) each ``(path, data)``; the size the server then has for it, or the error.

    Two round trips for the batch: the OPENs, then every WRITE with an FSTAT of the handle behind the
    file's writes (answered after them: its size counts every byte) and the CLOSEs.
    """
    opened = _open(sftp, [path for path, _data in files], SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC)
    requests: list[tuple[int, tuple]] = []
    spans: list[tuple[int, int] | OSError] = []  # per file: where its WRITE replies start and its FSTAT is
    handles = []
    for reply, (_path, data) in zip(opened, files, strict=True):
        if isinstance(reply, OSError):
            spans.append(reply)
            continue
        handle = reply.get_binary()
        handles.append(handle)
        start = len(requests)
        requests += [(CMD_WRITE, (handle, int64(at), data[at:at + _WRITE_SIZE]))
                     for at in range(0, len(data), _WRITE_SIZE)]
        spans.append((start, len(requests)))
        requests.append((CMD_FSTAT, (handle,)))
    closes = len(requests)
    replies = _pipelined(sftp, requests + [(CMD_CLOSE, (handle,)) for handle in handles])
    results: list[int | OSError] = []
    closed = iter(replies[closes:])
    for span in spans:
        if isinstance(span, OSError):
            results.append(span)
            continue
        start, fstat = span
        attrs = _payload(replies[fstat], CMD_ATTRS)
        # A failed WRITE, or a failed CLOSE (which may have lost buffered bytes), fails the file.
        errors = [r for r in (*replies[start:fstat], attrs, next(closed)) if isinstance(r, OSError)]
        results.append(errors[0] if errors else SFTPAttributes._from_msg(attrs).st_size or 0)
    return results
