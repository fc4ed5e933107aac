"""FTP and explicit FTPS (RFC 4217) transports, on ``ftplib``.

FTPS server identity: ``settings.host_key`` pins the certificate by its SHA-256
fingerprint.  Reported as ``SHA256:`` + colon-separated upper-case hex, exactly
what ``openssl x509 -noout -fingerprint -sha256`` prints after ``=``; a pin may
also be written without colons or as unpadded base64 (OpenSSH style).  Without
a pin the certificate must verify against the system CA store and match the host.

Listing uses MLSD; servers without it (500/502) fall back to NLST + one SIZE and
one MDTM per file, which is correct but costs two round trips per file.
"""

from __future__ import annotations

import base64
import calendar
import ftplib
import hashlib
import io
import posixpath
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from .base import (
    CODE_AUTH,
    CODE_DNS,
    CODE_HOST_KEY_CHANGED,
    CODE_HOST_KEY_UNKNOWN,
    CODE_NETWORK,
    CODE_NOT_FOUND,
    CODE_PERMISSION,
    CODE_REFUSED,
    CODE_TIMEOUT,
    CODE_TOO_LARGE,
    HostKeyError,
    RemoteFile,
    Transport,
    TransportError,
    TransportSettings,
)

CODE_SERVER_REFUSED = "server_refused"  # another 5xx reply: permanent
CODE_SERVER_TEMPORARY = "server_temporary"  # another 4xx reply: worth retrying
_NOT_FOUND_WORDS = ("no such ", "not found", "does not exist", "doesn't exist", "cannot find", "can't find")
_PERMISSION_WORDS = ("permission", "denied", "privilege", "not allowed", "forbidden", "read-only", "read only")


def cert_fingerprint(der: bytes) -> str:
    return "SHA256:" + ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _pinned_digest(value: str) -> bytes | None:
    """The SHA-256 digest a pin names (hex with or without colons, or base64), None if unreadable."""
    text = value.strip()
    text = text[7:] if text.upper().startswith("SHA256:") else text
    hexed = text.replace(":", "").replace(" ", "")
    try:
        return bytes.fromhex(hexed) if len(hexed) == 64 else base64.b64decode(text + "=" * (-len(text) % 4))
    except ValueError:  # binascii.Error included
        return None


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


def _close_quietly(ftp: ftplib.FTP) -> None:
    with suppress(Exception):  # closing must never raise
        ftp.close()


def _unverified_context() -> ssl.SSLContext:
    # Used when a pin exists (the fingerprint is the check) and to read an untrusted certificate.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


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

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> None:
        self._ftp = self._connect()

    def _new_client(self) -> ftplib.FTP:
        return ftplib.FTP()

    def _connect(self) -> ftplib.FTP:
        s = self.settings
        ftp = self._new_client()
        try:
            with self.step("TCP connect") as rec, self._errors("connect", ""):
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
        ftp.sock.settimeout(s.operation_timeout)
        ftp.timeout = s.operation_timeout  # ftplib's timeout for data connections
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
        return self._ftp

    def close(self) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is None:
            return
        with suppress(Exception):  # close never raises
            if not self._stale and ftp.sock is not None:
                ftp.sock.settimeout(2.0)  # a hung server must not hold up shutdown
                ftp.quit()
        _close_quietly(ftp)

    # -- error mapping -------------------------------------------------------
    def _fail(self, operation: str, path: str, reason: str, code: str, permanent: bool) -> TransportError:
        message = f"{self.scheme} {self._where}: {operation}{' ' + path if path else ''} failed: {reason}"
        if self.settings.password:  # a server might echo it; never let it reach a log
            message = message.replace(self.settings.password, "***")
        return TransportError(message, permanent=permanent, code=code)

    @contextmanager
    def _errors(self, operation: str, path: str, *, probe: str | None = None) -> Iterator[None]:
        """Turn ftplib/socket faults into TransportError; ``probe`` must exist unless the 550 means "missing"."""
        try:
            yield
        except TransportError:
            raise
        except ftplib.error_perm as err:
            raise self._reply_error(operation, path, str(err).strip(), probe) from err
        except ftplib.error_temp as err:
            reply = str(err).strip()
            code = CODE_NETWORK if reply[:3] in ("421", "425", "426") else CODE_SERVER_TEMPORARY
            raise self._fail(operation, path, f"server replied {reply!r}", code, False) from err
        except ValueError as err:  # ftplib refuses CR/LF in a path
            raise self._fail(operation, path, str(err), CODE_SERVER_REFUSED, True) from err
        except socket.gaierror as err:
            raise self._fail(operation, path, f"host name not resolved ({err})", CODE_DNS, False) from err
        except ConnectionRefusedError as err:
            raise self._fail(operation, path, "connection refused", CODE_REFUSED, False) from err
        except TimeoutError as err:
            self._stale = True
            raise self._fail(operation, path, "timed out waiting for the server", CODE_TIMEOUT, False) from err
        except (OSError, EOFError, ftplib.Error) as err:  # resets, EOF, TLS faults, garbled replies
            self._stale = True
            reason = f"connection lost or broken ({type(err).__name__}: {err})"
            raise self._fail(operation, path, reason, CODE_NETWORK, False) from err

    def _reply_error(self, operation: str, path: str, reply: str, probe: str | None) -> TransportError:
        status, text = reply[:3], reply.lower()
        if status == "530":
            code = CODE_AUTH
        elif any(w in text for w in _NOT_FOUND_WORDS):  # pyftpdlib even says it with 501
            code = CODE_NOT_FOUND
        elif any(w in text for w in _PERMISSION_WORDS) or status == "553":
            code = CODE_PERMISSION
        elif status == "550":  # unspecific: missing if the probed path is absent, else refused
            code = CODE_NOT_FOUND if probe is not None and self._exists(probe) is False else CODE_PERMISSION
        else:
            code = CODE_SERVER_REFUSED
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

    def list_dir(self, directory: str) -> list[RemoteFile]:
        ftp = self._client()
        with self._errors("list", directory, probe=directory):
            self._ascii = True
            files = self._mlsx_call(lambda: [
                RemoteFile(name, int(f.get("size", 0)), _mtime(f.get("modify")))
                for name, f in ftp.mlsd(directory) if f.get("type", "").lower() == "file"
            ])
            if files is NotImplemented:
                files = self._list_fallback(ftp, directory)
        return files

    def _list_fallback(self, ftp: ftplib.FTP, directory: str) -> list[RemoteFile]:
        try:
            names = ftp.nlst(directory)
        except (ftplib.error_perm, ftplib.error_temp) as err:
            if "no files" in str(err).lower():  # some servers' answer for an empty directory
                return []
            raise
        self._binary(ftp)
        files = []
        for entry in names:
            name = posixpath.basename(entry.rstrip("/"))  # some servers answer with paths
            if name in ("", ".", ".."):
                continue
            try:
                size = ftp.size(self.join(directory, name))
            except ftplib.error_perm:
                continue  # a directory (SIZE refuses them) or gone since NLST
            files.append(RemoteFile(name, size or 0, self._mdtm(ftp, self.join(directory, name))))
        return files

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
                return RemoteFile(name, 0, None) if self._mlsx is False and self._is_dir(path) else None
            return RemoteFile(name, size or 0, self._mdtm(ftp, path))

    def _is_dir(self, path: str) -> bool:
        ftp = self._client()
        try:
            ftp.cwd(path)
        except ftplib.error_perm:
            return False
        ftp.cwd(self._home)
        return True

    def read_file(self, path: str, *, max_bytes: int) -> bytes:
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
                    raise self._fail("download", path, f"file exceeds {max_bytes} bytes", CODE_TOO_LARGE, True)
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
        with self._errors("create directory", path):
            for part in (p for p in path.split("/") if p):
                current = posixpath.join(current, part)
                try:
                    ftp.mkd(current)
                except ftplib.error_perm:
                    if not self._is_dir(current):  # "exists" is worded differently by every server
                        raise


class _TLSClient(ftplib.FTP_TLS):
    """FTP_TLS whose data channels resume the control channel's TLS session.

    vsftpd (require_ssl_reuse) and FileZilla Server refuse data connections that
    do not; ftplib alone never does.  With a pin, each data channel's certificate
    is checked too.
    """

    pinned: bytes | None = None

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            try:
                conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
                if self.pinned and hashlib.sha256(conn.getpeercert(True)).digest() != self.pinned:
                    raise ssl.SSLError("data channel certificate differs from the control channel's")
            except BaseException:
                conn.close()
                raise
        return conn, size


class FTPSTransport(FTPTransport):
    """Explicit FTPS: AUTH TLS on the control channel, PROT P for every data channel."""

    scheme = "FTPS"

    def _new_client(self) -> ftplib.FTP:
        pin = self.settings.host_key.strip()
        client = _TLSClient(context=_unverified_context() if pin else ssl.create_default_context())
        client.pinned = _pinned_digest(pin) if pin else None
        return client

    def _secure(self, ftp: ftplib.FTP) -> None:
        assert isinstance(ftp, _TLSClient)
        pin = self.settings.host_key.strip()
        with self.step("TLS") as rec, self._errors("TLS handshake", ""):
            try:
                ftp.auth()
            except ssl.SSLCertVerificationError as err:
                presented = self._fetch_fingerprint()
                raise HostKeyError(
                    f"{self.scheme} {self._where}: certificate not trusted ({err.verify_message}); "
                    f"it presents {presented or 'an unreadable certificate'} - pin it if you trust it",
                    code=CODE_HOST_KEY_UNKNOWN, presented_key=presented, presented_fingerprint=presented,
                ) from err
            der = ftp.sock.getpeercert(binary_form=True)
            presented = cert_fingerprint(der)
            if pin and hashlib.sha256(der).digest() != ftp.pinned:
                raise HostKeyError(
                    f"{self.scheme} {self._where}: certificate CHANGED: presents {presented}, "
                    f"pinned {pin}; re-pin only if the server's certificate was really replaced",
                    code=CODE_HOST_KEY_CHANGED, presented_key=presented, presented_fingerprint=presented,
                    expected_fingerprint=pin,
                )
            rec.detail = presented

    def _after_login(self, ftp: ftplib.FTP) -> None:
        # PBSZ/PROT after login, like curl and FileZilla: some servers refuse them before USER.
        with self.step("Data protection"), self._errors("PROT P", ""):
            ftp.prot_p()  # type: ignore[attr-defined]

    def _fetch_fingerprint(self) -> str:
        """The certificate a failed verification rejected: Python hides it, so read it over a second connection."""
        probe = _TLSClient(context=_unverified_context())
        try:
            probe.connect(self.settings.host, self.settings.port or 21, timeout=self.settings.connect_timeout)
            probe.auth()
            return cert_fingerprint(probe.sock.getpeercert(binary_form=True))
        except (OSError, EOFError, ftplib.Error):
            return ""
        finally:
            _close_quietly(probe)
