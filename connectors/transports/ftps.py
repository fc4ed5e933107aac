"""Explicit FTPS (RFC 4217): AUTH TLS on the control channel, PROT P on every data channel.

Server identity: ``settings.host_key`` pins the certificate by its SHA-256
fingerprint.  Reported as ``SHA256:`` + colon-separated upper-case hex, exactly
what ``openssl x509 -noout -fingerprint -sha256`` prints after ``=``; a pin may
also be written without colons or as unpadded base64 (OpenSSH style).  Without
a pin the certificate must verify against the system CA store and match the host.
"""

from __future__ import annotations

import base64
import ftplib
import hashlib
import socket
import ssl

from .base import ErrorCode, HostKeyError, pinned_lines
from .ftp import FTPTransport, _close_quietly


def cert_fingerprint(der: bytes) -> str:
    return "SHA256:" + ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def pinned_digest(value: str) -> bytes | None:
    """The SHA-256 digest a pin names (hex with or without colons, or base64), None if unreadable."""
    text = value.strip()
    text = text[7:] if text.upper().startswith("SHA256:") else text
    hexed = text.replace(":", "").replace(" ", "")
    try:
        return bytes.fromhex(hexed) if len(hexed) == 64 else base64.b64decode(text + "=" * (-len(text) % 4))
    except ValueError:  # binascii.Error included
        return None


def _unverified_context() -> ssl.SSLContext:
    # Used when a pin exists (the fingerprint is the check) and to read an untrusted certificate.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _TLSClient(ftplib.FTP_TLS):
    """FTP_TLS whose data channels resume the control channel's TLS session.

    vsftpd (require_ssl_reuse) and FileZilla Server refuse data connections that
    do not; ftplib alone never does.  With a pin, each data channel's certificate
    is checked too.  Every TLS socket is in place (``sock``, ``data_sock``) before
    its handshake starts, so the transport's deadline can cut a handshake too.
    """

    pinned: set[bytes] | None = None  # SHA-256 digests of the pinned certificates (several in a rotation)
    data_sock: socket.socket | None = None

    def auth(self) -> str:
        """AUTH TLS; unlike ftplib's, the handshake runs on ``self.sock`` (the deadline cuts what it sees)."""
        resp = self.voidcmd("AUTH TLS")
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host, do_handshake_on_connect=False)
        self.file = self.sock.makefile(mode="r", encoding=self.encoding)
        self.sock.do_handshake()
        return resp

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        self.data_sock = conn
        if self._prot_p:
            try:
                conn = self.data_sock = self.context.wrap_socket(
                    conn, server_hostname=self.host, session=self.sock.session, do_handshake_on_connect=False
                )
                conn.do_handshake()
                if self.pinned and hashlib.sha256(conn.getpeercert(True)).digest() not in self.pinned:
                    raise ssl.SSLError("data channel certificate differs from the control channel's")
            except BaseException:
                conn.close()
                raise
        return conn, size


class FTPSTransport(FTPTransport):
    """Explicit FTPS: AUTH TLS on the control channel, PROT P for every data channel."""

    scheme = "FTPS"

    def _new_client(self) -> ftplib.FTP:
        pins = pinned_lines(self.settings.host_key)
        client = _TLSClient(context=_unverified_context() if pins else ssl.create_default_context())
        client.pinned = {d for d in map(pinned_digest, pins) if d is not None} if pins else None
        return client

    def _secure(self, ftp: ftplib.FTP) -> None:
        assert isinstance(ftp, _TLSClient)
        pin = ", ".join(pinned_lines(self.settings.host_key))
        with self.step("TLS") as rec, self._errors("TLS handshake", "", timeout=self.settings.connect_timeout):
            try:
                ftp.auth()
            except ssl.SSLCertVerificationError as err:
                presented = self._fetch_fingerprint()
                raise HostKeyError(
                    f"{self.scheme} {self._where}: certificate not trusted ({err.verify_message}); "
                    f"it presents {presented or 'an unreadable certificate'} - pin it if you trust it",
                    code=ErrorCode.HOST_KEY_UNKNOWN, presented_key=presented, presented_fingerprint=presented,
                ) from err
            der = ftp.sock.getpeercert(binary_form=True)
            presented = cert_fingerprint(der)
            if pin and hashlib.sha256(der).digest() not in (ftp.pinned or set()):
                raise HostKeyError(
                    f"{self.scheme} {self._where}: certificate CHANGED: presents {presented}, "
                    f"pinned {pin}; re-pin only if the server's certificate was really replaced",
                    code=ErrorCode.HOST_KEY_CHANGED, presented_key=presented, presented_fingerprint=presented,
                    expected_fingerprint=pin,
                )
            rec.detail = presented

    def _after_login(self, ftp: ftplib.FTP) -> None:
        # PBSZ/PROT after login, like curl and FileZilla: some servers refuse them before USER.
        with self.step("Data protection"), self._errors("PROT P", ""):
            ftp.prot_p()  # type: ignore[attr-defined]

    def _fetch_fingerprint(self) -> str:
        """The certificate a failed verification rejected: Python hides it, so read it over a second connection.

        Runs inside the TLS step's deadline, which cuts this probe connection meanwhile.
        """
        probe = _TLSClient(context=_unverified_context())
        wire, self._wire = self._wire, probe
        try:
            probe.connect(self.settings.host, self.settings.port or 21, timeout=self.settings.connect_timeout)
            probe.auth()
            return cert_fingerprint(probe.sock.getpeercert(binary_form=True))
        except (OSError, EOFError, ftplib.Error):
            return ""
        finally:
            self._wire = wire
            _close_quietly(probe)
