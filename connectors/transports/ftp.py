"""Plain FTP transport on ``ftplib`` (FTPS builds on it in ``ftps.py``).

Listing uses MLSD; servers without it (500/502) fall back to NLST + one SIZE and
one MDTM per file, which is correct but costs two round trips per file.

Every network operation ends within its deadline of wall-clock time
(``connect_timeout`` for connecting, banner and TLS handshake; ``operation_timeout``
for each later command, transfer or listing), whatever the server sends: a socket
timeout restarts with every byte, so a server dripping ``220-`` lines or a
multi-line reply would hold a recv forever.  The shared watchdog (``deadline.py``)
shuts the sockets down when time is up, which ends any blocked recv; the fault is
``ErrorCode.TIMEOUT`` and the next operation reconnects.
"""

from __future__ import annotations

import calendar
import ftplib
import io
import posixpath
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO, TypeVar

from .base import (
    ErrorCode,
    Listing,
    RemoteFile,
    Transport,
    TransportError,
    TransportSettings,
    first_entries,
)
from .deadline import Deadline, deadline

_NOT_FOUND_WORDS = ("no such ", "not found", "does not exist", "doesn't exist", "cannot find", "can't find")
_PERMISSION_WORDS = ("permission", "denied", "privilege", "not allowed", "forbidden", "read-only", "read only")
_LINE_MAX = 8192  # bytes of one listing line (ftplib's own limit); a longer one is counted and passed over
_SIZE = re.compile(r"[0-9]{1,20}")
T = TypeVar("T")


def _mtime(value: str | None) -> float | None:
    """``YYYYMMDDHHMMSS[.sss]`` (always UTC in MLSx/MDTM) as epoch seconds."""
    if not value:
        return None
    try:
        return calendar.timegm(time.strptime(value[:14], "%Y%m%d%H%M%S")) + float("0" + value[14:])
    except ValueError:
        return None


def _facts(text: str) -> dict[str, str]:
    pairs = (fact.partition("=") for fact in text.split(";") if fact)
    return {key.lower(): val for key, _, val in pairs}


def _lines(stream: BinaryIO) -> Iterator[bytes | None]:
    """Each line of a listing without its line end; None for one longer than _LINE_MAX (read past, never kept)."""
    while line := stream.readline(_LINE_MAX + 1):
        if len(line) > _LINE_MAX and not line.endswith(b"\n"):
            while (rest := stream.readline(_LINE_MAX + 1)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line.rstrip(b"\r\n")


def _text(line: bytes | None) -> str:
    """A listing line as text (ftplib's encoding); "" for one too long or not UTF-8 (counted, never kept)."""
    try:
        return "" if line is None else line.decode("utf-8")
    except UnicodeDecodeError:
        return ""


def _mlsd_entry(line: bytes | None) -> tuple[str, RemoteFile | None]:
    """``(name, the file or None)`` of an MLSD line (RFC 3659: ``fact=value;…; name``)."""
    facts_text, _, name = _text(line).partition(" ")
    facts = _facts(facts_text)
    size = facts.get("size", "0")
    if facts.get("type", "").lower() != "file" or not _SIZE.fullmatch(size):
        return name, None  # a directory, a link; or a size no file has: passed over, not the whole listing
    return name, RemoteFile(name, int(size), _mtime(facts.get("modify")))


def _nlst_name(line: bytes | None) -> str:
    return posixpath.basename(_text(line).rstrip("/"))  # some servers answer with paths


def _name_of(entry: str | tuple[str, RemoteFile | None]) -> str:
    return entry if isinstance(entry, str) else entry[0]


def _close_quietly(ftp: ftplib.FTP) -> None:
    with suppress(Exception):  # closing must never raise
        ftp.close()


def _cut(ftp: ftplib.FTP | None) -> None:
    """Shut down the control and data sockets of ``ftp``: any recv blocked on them returns at once.

    ``socket.socket.shutdown`` even for TLS sockets: only the kernel call, nothing the
    thread blocked in the TLS object shares.  Closed or detached sockets are skipped.
    """
    for sock in (getattr(ftp, "sock", None), getattr(ftp, "data_sock", None)):
        if sock is not None:
            with suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Client(ftplib.FTP):
    """``ftplib.FTP`` that keeps its current data connection where a deadline can cut it."""

    data_sock: socket.socket | None = None

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = super().ntransfercmd(cmd, rest)
        self.data_sock = conn
        return conn, size


class FTPTransport(Transport):
    """Plain FTP: passive mode, binary transfers, every operation bounded by ``operation_timeout``."""

    scheme = "FTP"

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        self._ftp: ftplib.FTP | None = None
        self._stale = False  # control connection unusable (aborted download, network fault)
        self._mlsx: bool | None = None  # MLSD/MLST support, learnt on first use
        self._ascii = False  # ftplib switches to TYPE A for every listing; SIZE and RETR need TYPE I
        self._home = "/"
        self._where = f"{settings.host}:{settings.port or 21}"
        # The running operation: the client it talks to (what its deadline cuts) and the deadline.
        self._wire: ftplib.FTP | None = None
        self._running: Deadline | None = None
        self._limit = settings.operation_timeout

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> None:
        self._ftp = self._connect()

    def _new_client(self) -> ftplib.FTP:
        return _Client()

    def _connect(self) -> ftplib.FTP:
        s = self.settings
        ftp = self._wire = self._new_client()
        try:
            with self.step("TCP connect") as rec, self._errors("connect", "", timeout=s.connect_timeout):
                rec.detail = self._where
                ftp.connect(s.host, s.port or 21, timeout=s.connect_timeout)  # also reads the banner
            self._secure(ftp)
            with self.step("Authentication") as rec, self._errors(f"login as {s.username!r}", ""):
                ftp.login(s.username, s.password)
            self._after_login(ftp)
            with self.step("Binary mode"), self._errors("TYPE I", ""):
                ftp.voidcmd("TYPE I")
                self._home = ftp.pwd()
        except BaseException:
            _close_quietly(ftp)
            raise
        self._stale = self._ascii = False
        return ftp

    def _secure(self, ftp: ftplib.FTP) -> None:
        """FTPS: AUTH TLS and identity check."""

    def _after_login(self, ftp: ftplib.FTP) -> None:
        """FTPS: protect the data channel."""

    def _client(self) -> ftplib.FTP:
        """The control connection, reconnected (quietly, steps kept) after it was abandoned."""
        if self._ftp is None or self._stale:
            if self._ftp is not None:
                _close_quietly(self._ftp)
            steps, self.steps = self.steps, []
            try:
                self._ftp = self._connect()
            finally:
                self.steps = steps
        self._wire = self._ftp
        return self._ftp

    def close(self) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is None:
            return
        with suppress(Exception):  # close never raises
            if not self._stale and ftp.sock is not None:
                self._wire = ftp
                with self._deadline(2.0):  # a hung or dripping server must not hold up shutdown
                    ftp.quit()
        _close_quietly(ftp)

    def abort(self) -> None:
        self._stale = True  # no QUIT on a cut connection: close() only closes the sockets
        _cut(self._wire)
        _cut(self._ftp)

    def is_alive(self) -> bool:
        """A NOOP answered within a few seconds (the server may have dropped an idle control connection)."""
        ftp = self._ftp
        if ftp is None or self._stale:
            return False
        self._wire = ftp
        try:
            with self._errors("NOOP", "", timeout=min(self.settings.operation_timeout, 5.0)):
                ftp.voidcmd("NOOP")
        except TransportError:
            return False
        return True

    # -- deadlines -----------------------------------------------------------
    @contextmanager
    def _deadline(self, seconds: float) -> Iterator[None]:
        """End the enclosed operation on ``self._wire`` within ``seconds`` of wall-clock time.

        Raises TimeoutError when the watchdog fired, even if the operation then
        "succeeded" (a cut transfer may look complete); the connection is stale
        either way.  Nested deadlines are no-ops: the outermost operation's rules.
        """
        if self._running is not None:
            with self._running.guard():  # whatever breaks after the outer cut is the timeout
                yield
            return
        self._limit = seconds
        wire = self._wire
        if wire is not None:  # also the socket timeout: no single wait outlives the deadline
            wire.timeout = seconds  # ftplib's timeout for new data connections
            if wire.sock is not None:
                wire.sock.settimeout(seconds)
        try:
            with deadline(seconds, self._expire) as self._running:
                yield
        finally:
            self._running = None

    def _expire(self) -> None:
        """The deadline's cut, on the watchdog thread: whatever the operation talks to now (FTPS swaps it)."""
        self._stale = True
        _cut(self._wire)

    # -- error mapping -------------------------------------------------------
    def _fail(self, operation: str, path: str, reason: str, code: str, permanent: bool) -> TransportError:
        message = f"{self.scheme} {self._where}: {operation}{' ' + path if path else ''} failed: {reason}"
        if self.settings.password:  # a server might echo it; never let it reach a log
            message = message.replace(self.settings.password, "***")
        return TransportError(message, permanent=permanent, code=code)

    @contextmanager
    def _errors(
        self, operation: str, path: str, *, probe: str | None = None, timeout: float | None = None
    ) -> Iterator[None]:
        """One network operation, bounded by ``timeout`` (default: operation_timeout) of wall-clock time.

        Turns ftplib/socket faults into TransportError; ``probe`` must exist unless the 550 means "missing".
        """
        try:
            with self._deadline(self.settings.operation_timeout if timeout is None else timeout):
                yield
        except TransportError:
            raise
        except ftplib.error_perm as err:
            raise self._reply_error(operation, path, str(err).strip(), probe) from err
        except ftplib.error_temp as err:
            reply = str(err).strip()
            code = ErrorCode.NETWORK if reply[:3] in ("421", "425", "426") else ErrorCode.SERVER_TEMPORARY
            raise self._fail(operation, path, f"server replied {reply!r}", code, False) from err
        except ValueError as err:  # ftplib refuses CR/LF in a path
            raise self._fail(operation, path, str(err), ErrorCode.SERVER_REFUSED, True) from err
        except socket.gaierror as err:
            raise self._fail(operation, path, f"host name not resolved ({err})", ErrorCode.DNS, False) from err
        except ConnectionRefusedError as err:
            raise self._fail(operation, path, "connection refused", ErrorCode.REFUSED, False) from err
        except TimeoutError as err:
            self._stale = True
            reason = f"timed out: no complete answer within {self._limit:g} s"
            raise self._fail(operation, path, reason, ErrorCode.TIMEOUT, False) from err
        except (OSError, EOFError, ftplib.Error) as err:  # resets, EOF, TLS faults, garbled replies
            self._stale = True
            reason = f"connection lost or broken ({type(err).__name__}: {err})"
            raise self._fail(operation, path, reason, ErrorCode.NETWORK, False) from err

    def _reply_error(self, operation: str, path: str, reply: str, probe: str | None) -> TransportError:
        status, text = reply[:3], reply.lower()
        if status == "530":
            code = ErrorCode.AUTH
        elif any(w in text for w in _NOT_FOUND_WORDS):  # pyftpdlib even says it with 501
            code = ErrorCode.NOT_FOUND
        elif any(w in text for w in _PERMISSION_WORDS) or status == "553":
            code = ErrorCode.PERMISSION
        elif status == "550":  # unspecific: missing if the probed path is absent, else refused
            code = ErrorCode.NOT_FOUND if probe is not None and self._exists(probe) is False else ErrorCode.PERMISSION
        else:
            code = ErrorCode.SERVER_REFUSED
        return self._fail(operation, path, f"server replied {reply!r}", code, True)

    def _exists(self, path: str) -> bool | None:
        try:
            return self.stat(path) is not None
        except Exception:  # noqa: BLE001 - a probe only refines a message
            return None

    # -- primitives ----------------------------------------------------------
    def _mlsx_call(self, fn: Callable[[], Any]) -> Any:
        """Run an MLSD/MLST call; NotImplemented (remembered) when the server lacks them."""
        if self._mlsx is False:
            return NotImplemented
        try:
            result = fn()
        except ftplib.error_perm as err:
            if str(err)[:3] not in ("500", "502"):
                raise
            self._mlsx = False
            return NotImplemented
        self._mlsx = True
        return result

    def list_dir(self, directory: str, *, limit: int | None = None) -> Listing:
        ftp = self._client()
        with self._errors("list", directory, probe=directory):
            found = self._mlsx_call(lambda: self._listing(ftp, f"MLSD {directory}", limit, _mlsd_entry))
            if found is not NotImplemented:
                entries, truncated = found
                return Listing((file for _name, file in entries if file is not None), truncated=truncated)
            names, truncated = self._nlst(ftp, directory, limit)
        # One deadline per file: a long listing is many operations, not one.  A cut-short NLST left the
        # control connection stale: the SIZE and MDTM go over a new one.
        ftp = self._client()
        files = (self._fallback_entry(ftp, directory, name) for name in names if name not in ("", ".", ".."))
        return Listing((f for f in files if f is not None), truncated=truncated)

    def _nlst(self, ftp: ftplib.FTP, directory: str, limit: int | None) -> tuple[list[str], bool]:
        try:
            return self._listing(ftp, f"NLST {directory}", limit, _nlst_name)
        except (ftplib.error_perm, ftplib.error_temp) as err:
            if "no files" in str(err).lower():  # some servers' answer for an empty directory
                return [], False
            raise

    def _listing(self, ftp: ftplib.FTP, command: str, limit: int | None,
                 entry: Callable[[bytes | None], T]) -> tuple[list[T], bool]:
        """The entries of a listing ``command``, read a line at a time as far as ``limit`` (``first_entries``).

        A listing cut short ends its transfer by closing the data connection; the server's reply to that is not
        waited for (it would race an ABOR exchange), so the control connection is dropped: the next call reconnects.
        """
        ftp.voidcmd("TYPE A")  # as ftplib's listings: servers send them as text
        self._ascii = True
        with ftp.transfercmd(command) as conn, conn.makefile("rb") as stream:
            found, truncated = first_entries(map(entry, _lines(stream)), limit, name=_name_of)
            if truncated:
                self._stale = True
                return found, True
            if isinstance(conn, ssl.SSLSocket):
                conn.unwrap()  # orderly TLS close, as ftplib does
        ftp.voidresp()
        return found, False

    def _fallback_entry(self, ftp: ftplib.FTP, directory: str, name: str) -> RemoteFile | None:
        """SIZE + MDTM for one NLST name; None for a directory (SIZE refuses them) or a file gone since."""
        path = self.join(directory, name)
        with self._errors("list", directory):
            self._binary(ftp)
            try:
                size = ftp.size(path)
            except ftplib.error_perm:
                return None
            return RemoteFile(name, size or 0, self._mdtm(ftp, path))

    def _binary(self, ftp: ftplib.FTP) -> None:
        if self._ascii:
            ftp.voidcmd("TYPE I")
            self._ascii = False

    def _mdtm(self, ftp: ftplib.FTP, path: str) -> float | None:
        try:
            return _mtime(ftp.sendcmd(f"MDTM {path}")[4:].strip())
        except ftplib.error_perm:
            return None

    def stat(self, path: str) -> RemoteFile | None:
        """A file (or, so that nothing is ever overwritten, a directory with size 0) or None."""
        ftp, name = self._client(), posixpath.basename(path.rstrip("/"))
        with self._errors("stat", path):
            try:
                reply = self._mlsx_call(lambda: ftp.sendcmd(f"MLST {path}"))
                if reply is not NotImplemented:
                    lines = [ln.strip() for ln in reply.splitlines() if "=" in ln and ";" in ln]
                    facts = _facts(lines[0].split(" ", 1)[0]) if lines else {}
                    size = int(facts.get("size", 0)) if facts.get("type", "file").lower() == "file" else 0
                    return RemoteFile(name, size, _mtime(facts.get("modify")))
                self._binary(ftp)  # SIZE is refused (550) in ASCII mode
                size = ftp.size(path)
            except ftplib.error_perm as err:
                if any(w in str(err).lower() for w in _PERMISSION_WORDS):
                    raise
                return RemoteFile(name, 0, None) if self._mlsx is False and self._is_dir(ftp, path) else None
            return RemoteFile(name, size or 0, self._mdtm(ftp, path))

    def _is_dir(self, ftp: ftplib.FTP, path: str) -> bool:
        try:
            ftp.cwd(path)
        except ftplib.error_perm:
            return False
        ftp.cwd(self._home)
        return True

    def read_file(self, path: str, *, max_bytes: int, size_hint: int | None = None) -> bytes:
        ftp, chunks, total = self._client(), [], 0
        with self._errors("download", path, probe=path):
            self._binary(ftp)
            conn = ftp.transfercmd(f"RETR {path}")
            with conn:
                while total <= max_bytes and (chunk := conn.recv(min(65536, max_bytes + 1 - total))):
                    chunks.append(chunk)
                    total += len(chunk)
                if total > max_bytes:
                    # Stop reading: the server's end-of-transfer reply would now race an ABOR
                    # exchange, so drop the control connection; the next call reconnects.
                    self._stale = True
                    raise self._fail("download", path, f"file exceeds {max_bytes} bytes", ErrorCode.TOO_LARGE, True)
                if isinstance(conn, ssl.SSLSocket):
                    conn.unwrap()  # orderly TLS close, as ftplib does
            ftp.voidresp()
        return b"".join(chunks)

    def write_file(self, path: str, data: bytes) -> None:
        ftp = self._client()
        with self._errors("upload", path, probe=posixpath.dirname(path) or self._home):
            ftp.storbinary(f"STOR {path}", io.BytesIO(data))

    def rename(self, src: str, dst: str) -> None:
        # RNTO replaces an existing target on most servers (pyftpdlib, vsftpd, ProFTPD), so
        # the inherited rename_no_overwrite checks with stat first; another client creating
        # ``dst`` between that check and RNTO would be overwritten - FTP offers nothing better.
        ftp = self._client()
        with self._errors("rename", f"{src} to {dst}", probe=src):
            ftp.sendcmd(f"RNFR {src}")
        with self._errors("rename", f"{src} to {dst}", probe=posixpath.dirname(dst) or self._home):
            ftp.voidcmd(f"RNTO {dst}")

    def remove(self, path: str) -> None:
        ftp = self._client()
        with self._errors("delete", path, probe=path):
            ftp.delete(path)

    def makedirs(self, path: str) -> None:
        ftp = self._client()
        current = "/" if path.startswith("/") else ""
        for part in (p for p in path.split("/") if p):
            current = posixpath.join(current, part)
            with self._errors("create directory", path):  # one deadline per level
                try:
                    ftp.mkd(current)
                except ftplib.error_perm:
                    if not self._is_dir(ftp, current):  # "exists" is worded differently by every server
                        raise
