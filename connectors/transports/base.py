"""The transport contract every dropzone protocol implements.

A transport is built from plain :class:`TransportSettings` (never from a model
row) so it runs in tests, benchmarks and the ERP simulator without Django.
The base class fixes the order of the steps of the operations the pipeline
relies on (``put_atomic``, ``move_no_overwrite``); subclasses provide small
primitives.  Every fault leaves as :class:`TransportError`, which knows whether
retrying can help.  Messages are written for an admin and never contain a
secret.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from itertools import islice
from typing import TypeVar

from .errors import ErrorCode, HostKeyError, TransportError, permanent
from .lanes import run_parallel

__all__ = ["LISTING_LIMIT", "ErrorCode", "HostKeyError", "Listing", "RemoteFile", "Step", "Transport", "TransportError",
           "TransportSettings", "first_entries", "permanent", "pinned_lines", "timed_step"]

T = TypeVar("T")
R = TypeVar("R")

#: Directory entries a poll reads of one listing at most (``list_dir``'s ``limit``); the rest wait for the next
#: listing.  A directory that an ERP, or a hostile server, fills without end then costs one listing of ~10 MB.
LISTING_LIMIT = 10_000
#: Characters of one entry name a listing keeps: more than any file system allows in a name (255 bytes on most).
#: A longer name is counted and passed over, so a listing holds at most LISTING_LIMIT x this of names.
LISTING_NAME_MAX = 1024


@dataclass(frozen=True)
class TransportSettings:
    """Everything a transport needs, as plain values.

    ``host_key`` is the pinned server identity: an OpenSSH public key line
    (``ssh-ed25519 AAAA…``) for SFTP, a ``SHA256:…`` certificate fingerprint
    for FTPS.  Secrets are excluded from ``repr`` so they never reach a log.
    """

    kind: str
    host: str = ""
    port: int | None = None
    username: str = ""
    password: str = field(default="", repr=False)
    private_key: str = field(default="", repr=False)
    private_key_passphrase: str = field(default="", repr=False)
    host_key: str = ""  # one per line: several may be pinned while a server rotates its key
    temp_suffix: str = ".tmp"
    connect_timeout: float = 10.0
    operation_timeout: float = 30.0
    #: Uploads in flight at once over one connection, where the protocol allows it (SFTP channels).
    upload_channels: int = 2
    #: Local transport only: the operator's jail (LOCAL_DROPZONE_ROOT); every path resolves inside it ...
    local_root: str = ""
    #: ... and inside this directory of it (the organization's slug), made when missing; "": the root itself.
    local_tenant: str = ""


def pinned_lines(host_key: str) -> list[str]:
    """The pinned identities, one per non-empty line."""
    return [line.strip() for line in host_key.splitlines() if line.strip()]


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    mtime: float | None  # seconds since the epoch, None where the server does not say


class Listing(list[RemoteFile]):
    """The regular files ``list_dir`` read; ``truncated``: it stopped at its ``limit``, entries were left unread."""

    def __init__(self, files: Iterable[RemoteFile] = (), *, truncated: bool = False) -> None:
        super().__init__(files)
        self.truncated = truncated


def first_entries(entries: Iterable[T], limit: int | None, name: Callable[[T], str]) -> tuple[list[T], bool]:
    """The first ``limit`` entries of a directory as a protocol reads them (all of them without a limit), and
    whether more were left unread.

    Every entry counts: files, directories, links, names to be skipped.  ``.`` and ``..`` (the directory and its
    parent, which some servers list) are passed over once each without counting; a name longer than
    LISTING_NAME_MAX counts but is not kept.  The entry after the limit is read only to tell "exactly ``limit``"
    from "more": the caller stops the protocol's reading then (a generator is closed, a transfer ended).
    """
    kept: list[T] = []
    counted, passed = 0, set[str]()
    for entry in entries:
        entry_name = name(entry)
        if entry_name in (".", "..") and entry_name not in passed:
            passed.add(entry_name)
            continue
        if counted == limit:
            return kept, True
        counted += 1
        if len(entry_name) <= LISTING_NAME_MAX:
            kept.append(entry)
    return kept, False


@dataclass
class Step:
    """One timed step of opening or probing a connection (shown in "test connection")."""

    name: str
    ok: bool = True
    detail: str = ""
    seconds: float = 0.0


@contextmanager
def timed_step(steps: list[Step], name: str) -> Iterator[Step]:
    """Append a timed :class:`Step` to ``steps``; a failing step is recorded with its error, then re-raised."""
    record = Step(name=name)
    started = time.monotonic()
    try:
        yield record
    except Exception as err:
        record.ok = False
        record.detail = record.detail or str(err)
        raise
    finally:
        record.seconds = round(time.monotonic() - started, 3)
        steps.append(record)


class Transport(ABC):
    """A connection to one dropzone.

    Use as a context manager: ``with get_transport(settings) as t: …``; one
    open transport serves a whole batch and is always closed.  Paths are
    strings; remote transports use POSIX paths.
    """

    #: How many operations may run at once over one open connection (see ``open_lanes``).
    max_lanes: int = 1
    #: Files a lane takes at once for ``put_batch``: more than one only where the protocol pipelines them
    #: (elsewhere a batch would only widen what a crash leaves delivered but unrecorded).
    put_batch_size: int = 1

    def __init__(self, settings: TransportSettings) -> None:
        self.settings = settings
        self.steps: list[Step] = []

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abstractmethod
    def open(self) -> None:
        """Connect, verify the server's identity and log in, recording ``steps``."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; never raises."""

    def abort(self) -> None:
        """Cut the connection from another thread: every blocked operation on it (any lane) fails at once.

        Must not block (the job budget's watchdog calls it).  After it, the transport is only closed.
        A local directory has nothing to cut.
        """
        return None

    def is_alive(self) -> bool:
        """Whether an open transport kept from an earlier job can still serve (the engine's session cache).

        False by default: only transports that can tell cheaply are ever reused.
        """
        return False

    def keep_alive(self) -> None:
        """About to be kept idle between jobs: keep the server from dropping it meanwhile (if the protocol can)."""
        return None

    def open_lanes(self, count: int) -> list[Transport]:
        """Up to ``count`` handles on this open connection, each for one thread at a time; ``self`` first.

        Transports that can run several operations at once over one
        connection (SFTP channels) override this and ``close_lanes``.
        """
        return [self]

    def close_lanes(self, lanes: list[Transport]) -> None:
        """Release what ``open_lanes`` opened beyond ``self``; never raises."""
        return None

    def parallel(
        self, op: Callable[[Transport, T], R], items: Iterable[T], *, tick: float = 1.0
    ) -> Iterator[tuple[T, R | TransportError] | None]:
        """``op(lane, item)`` for every item over up to ``max_lanes`` lanes; see ``lanes.run_parallel``."""
        return run_parallel(self, op, items, lanes=self.max_lanes, tick=tick)

    def parallel_batches(
        self, op: Callable[[Transport, list[T]], list[R | TransportError]], items: Iterable[T], *,
        size: int | None = None, most: int = 32, tick: float = 1.0,
    ) -> Iterator[tuple[T, R | TransportError] | None]:
        """``op(lane, batch)`` over the lanes, for batches of ``size`` items (default: the items split into one
        batch per lane, at most ``most`` each; with ``size``, ``items`` may be a stream, read as the lanes go).

        Yields ``(item, result)`` per item as its batch finishes, ``None`` every idle ``tick``; an error that
        ends a whole batch is each of its items' result.  For operations a protocol can pipeline
        (``read_many``, ``move_many``, ``put_batch``): a batch costs a lane a round trip or two, not a few
        per item.
        """
        if size is None:
            items = list(items)
            size = max(1, min(most, -(-len(items) // self.max_lanes)))
        source = iter(items)
        batches = iter(lambda: list(islice(source, size)), [])
        for result in self.parallel(op, batches, tick=tick):
            if result is None:
                yield None
                continue
            batch, outcome = result
            yield from zip(batch, [outcome] * len(batch) if isinstance(outcome, TransportError) else outcome,
                           strict=True)

    def step(self, name: str) -> AbstractContextManager[Step]:
        """Time one step of ``open``/probing into ``self.steps``."""
        return timed_step(self.steps, name)

    # -- primitives every transport provides -------------------------------
    @abstractmethod
    def list_dir(self, directory: str, *, limit: int | None = None) -> Listing:
        """Regular files of ``directory`` (not sub-directories), among at most ``limit`` of its entries.

        The listing is read as it arrives and stops after ``limit`` entries (see ``first_entries``), so its memory
        stays bounded whatever the server sends; ``Listing.truncated`` says entries were left unread.
        """

    @abstractmethod
    def stat(self, path: str) -> RemoteFile | None:
        """The file at ``path``, or None when there is none."""

    @abstractmethod
    def read_file(self, path: str, *, max_bytes: int, size_hint: int | None = None) -> bytes:
        """The file's bytes; ``TransportError(code=ErrorCode.TOO_LARGE)`` past ``max_bytes``.

        ``size_hint``: the size a listing just gave, which lets a protocol skip asking for it.
        """

    @abstractmethod
    def write_file(self, path: str, data: bytes) -> None:
        """Create or truncate ``path`` with ``data`` (no atomicity promised)."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """The server's own rename; whether it overwrites ``dst`` depends on the server."""

    @abstractmethod
    def remove(self, path: str) -> None: ...

    @abstractmethod
    def makedirs(self, path: str) -> None:
        """Create ``path`` and its parents; an existing directory is fine."""

    # -- operations built on the primitives --------------------------------
    def join(self, directory: str, name: str) -> str:
        return posixpath.join(directory, name)

    def rename_no_overwrite(self, src: str, dst: str) -> None:
        """Rename, refusing with ``ErrorCode.EXISTS`` when ``dst`` exists.

        The default checks first; transports whose server refuses atomically
        (OpenSSH's SFTP rename, ``link`` on a local disk) override it.
        """
        if self.stat(dst) is not None:
            raise TransportError(f"{dst} already exists on the server", permanent=True, code=ErrorCode.EXISTS)
        self.rename(src, dst)

    def put_atomic(self, directory: str, name: str, data: bytes) -> str:
        """Write ``name + temp_suffix``, verify its size, rename it to ``name``.

        Never overwrites: an existing final file is ``ErrorCode.EXISTS`` (permanent).
        Returns the final path.
        """
        final = self.join(directory, name)
        temp = final + self.settings.temp_suffix
        if self.stat(final) is not None:
            raise TransportError(f"{final} already exists on the server", permanent=True, code=ErrorCode.EXISTS)
        try:
            self.write_file(temp, data)
            written = self.stat(temp)
            if written is None or written.size != len(data):
                got = "no file" if written is None else f"{written.size} bytes"
                raise TransportError(
                    f"upload of {temp} incomplete: expected {len(data)} bytes, server has {got}",
                    code=ErrorCode.SIZE_MISMATCH,
                )
            self.rename_no_overwrite(temp, final)
        except TransportError:
            self.remove_stale_temp(final)  # never leave a half-written temp file in the ERP's dropzone
            raise
        return final

    def remove_stale_temp(self, final: str) -> None:
        """Remove the temp file of ``final`` that an interrupted upload left behind; best effort."""
        temp = final + self.settings.temp_suffix
        with suppress(TransportError):
            if self.stat(temp) is not None:
                self.remove(temp)

    def holds_file(self, directory: str, name: str, *, sha256: str, size: int) -> bool:
        """After ``ErrorCode.EXISTS``: is the final file ours (exactly these bytes)?

        An interrupted earlier attempt may have renamed it before the database
        heard of it.  Our stale temp file, if any, is removed either way.
        """
        path = self.join(directory, name)
        try:
            existing = self.read_file(path, max_bytes=size)
        except TransportError:
            same = False
        else:
            same = hashlib.sha256(existing).hexdigest() == sha256
        self.remove_stale_temp(path)
        return same

    def put_batch(self, directory: str, items: list[tuple[str, bytes]]) -> list[str | TransportError]:
        """``put_atomic`` of each ``(name, data)``: one result (final path or error) each, in order.

        Protocols that can pipeline (SFTP) do a whole batch in a few round trips, with the same guarantees.
        """
        results: list[str | TransportError] = []
        for name, data in items:
            try:
                results.append(self.put_atomic(directory, name, data))
            except TransportError as err:
                results.append(err)
        return results

    def put_many(
        self, directory: str, items: Iterable[tuple[str, bytes]]
    ) -> list[tuple[str, str | TransportError]]:
        """``put_atomic`` for several files over the lanes; one result (path or error) per item, in order."""
        todo = list(items)
        found: dict[int, str | TransportError] = {}
        put = lambda lane, batch: lane.put_batch(directory, [todo[i] for i in batch])  # noqa: E731
        for result in self.parallel_batches(put, range(len(todo)), most=self.put_batch_size):
            if result is not None:
                found[result[0]] = result[1]
        return [(name, found[i]) for i, (name, _data) in enumerate(todo)]

    def read_many(self, directory: str, files: list[RemoteFile], *, max_bytes: int) -> list[bytes | TransportError]:
        """``read_file`` of each listed file of ``directory`` (its listed size the hint); a result each, in order."""
        results: list[bytes | TransportError] = []
        for f in files:
            try:
                results.append(self.read_file(self.join(directory, f.name), max_bytes=max_bytes, size_hint=f.size))
            except TransportError as err:
                results.append(err)
        return results

    def move_many(self, moves: list[tuple[str, str]]) -> list[str | TransportError]:
        """``move_no_overwrite(src, dest_dir)`` for each pair; one result (new path or error) each, in order."""
        results: list[str | TransportError] = []
        for src, dest_dir in moves:
            try:
                results.append(self.move_no_overwrite(src, dest_dir))
            except TransportError as err:
                results.append(err)
        return results

    def move_no_overwrite(self, src: str, dest_dir: str) -> str:
        """Move ``src`` into ``dest_dir``; on a name collision add ``-1``, ``-2``… before the extension.

        Returns the new path.  Gives up (permanent error) after 1000 collisions.
        """
        base = posixpath.basename(src)
        stem, dot, ext = base.rpartition(".")
        if not dot:
            stem, ext = base, ""
        for n in range(1000):
            candidate = base if n == 0 else _numbered(stem, n, f"{dot}{ext}")
            target = self.join(dest_dir, candidate)
            try:
                self.rename_no_overwrite(src, target)
                return target
            except TransportError as err:
                if err.code != ErrorCode.EXISTS:
                    raise
        raise TransportError(f"no free name for {base} in {dest_dir}", permanent=True, code=ErrorCode.EXISTS)


NAME_MAX = 255  # bytes in one file name, on every common filesystem and server


def _numbered(stem: str, n: int, ext: str) -> str:
    """``stem-n.ext``, the stem cut (at a character boundary) so the name stays within NAME_MAX bytes."""
    suffix = f"-{n}{ext}"
    room = NAME_MAX - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:max(room, 1)].decode("utf-8", errors="ignore")
    return f"{cut}{suffix}"
