"""A misbehaving FTP(S) server that keeps talking, slowly: no socket timeout ever fires.

A socket timeout restarts with every byte, so a client that trusts it alone waits
forever for a server that drips.  This server shows it on 127.0.0.1, in one of
four modes (one line, byte or TLS fragment every ``interval`` seconds, forever):

* ``banner``     ``220-`` continuation lines instead of a greeting;
* ``handshake``  ``234`` to ``AUTH TLS``, then a TLS record that never completes;
* ``reply``      a normal login (with ``tls=True`` over AUTH TLS), then a
  multi-line ``250-`` reply to ``MLST`` of any path containing ``drip`` and to ``QUIT``;
* ``data``       a normal login, then ``RETR``/``MLSD`` of a path containing
  ``drip`` send their data one byte at a time (``tls=True``: PROT P channels).

Other paths are answered promptly (``MLST`` facts, ``RETR`` sends ``abc``), so a
test can show that the transport reconnects and works after a timeout.
``connections`` counts the control connections accepted.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import tempfile
import threading
from pathlib import Path

from connectors.transports.base import TransportSettings
from tests.servers.ftpd import HOST, fingerprint, make_certificate
from tests.servers.listener import LoopbackListener

MODES = ("banner", "handshake", "reply", "data")
LOGIN_REPLIES = {"USER": "331 password please", "PASS": "230 logged in", "TYPE": "200 type set",
                 "PWD": '257 "/" is the current directory', "PBSZ": "200 PBSZ=0", "PROT": "200 protection set"}


class _Gone(Exception):
    """The client went away (or the server is stopping): end this connection's thread."""


class DrippingFTPServer(LoopbackListener):
    """Use as a context manager; ``settings()`` gives TransportSettings for it (FTPS: certificate pinned)."""

    thread_name = "drip-ftp"
    #: Commands answered over a data connection, and the fixed replies to the others (hooks for subclasses).
    transfers: tuple[str, ...] = ("RETR", "MLSD")
    replies: dict[str, str] = LOGIN_REPLIES

    def __init__(self, mode: str, *, tls: bool = False, interval: float = 0.2) -> None:
        assert mode in MODES, mode
        super().__init__()
        self.mode, self.tls, self.interval = mode, tls or mode == "handshake", interval
        self.connections = 0
        self._scratch = Path(tempfile.mkdtemp(prefix="drip-"))
        cert, key, der = make_certificate(self._scratch)
        self.fingerprint = fingerprint(der)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)

    def settings(self, **overrides: object) -> TransportSettings:
        values: dict[str, object] = {
            "kind": "ftps" if self.tls else "ftp", "host": HOST, "port": self.port, "username": "u",
            "password": "Dr1p-s3cret-PW", "host_key": self.fingerprint if self.tls else "",
            "connect_timeout": 1.0, "operation_timeout": 1.0,
        }
        values.update(overrides)
        return TransportSettings(**values)  # type: ignore[arg-type]

    def _accepted(self, conn: socket.socket) -> None:
        self.connections += 1
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # -- one control connection --------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        self._open.append(conn)
        try:
            self._session(conn)
        except (_Gone, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _session(self, conn: socket.socket) -> None:
        if self.mode == "banner":
            self._drip(conn, b"220-still starting, please wait\r\n")
        self._send(conn, "220 dripping ftpd ready")
        ctrl, reader, pasv = conn, conn.makefile("rb"), None
        while line := reader.readline():
            verb, _, arg = line.decode("latin-1").strip().partition(" ")
            verb = verb.upper()
            if verb == "AUTH":
                self._send(ctrl, "234 go ahead with TLS")
                if self.mode == "handshake":  # a TLS record header promising 16 KiB, then a byte at a time
                    self._drip(ctrl, b"\x16\x03\x03\x40\x00", then=b"\x00")
                ctrl = self._tls.wrap_socket(ctrl, server_side=True)
                self._open.append(ctrl)
                reader = ctrl.makefile("rb")
            elif verb in self.replies:
                self._send(ctrl, self.replies[verb])
            elif verb == "QUIT":
                if self.mode == "reply":
                    self._drip(ctrl, b"221-so long, and\r\n")
                self._send(ctrl, "221 bye")
                return
            elif verb == "MLST":
                self._mlst(ctrl, arg)
            elif verb == "PASV":
                pasv = socket.create_server((HOST, 0))
                self._open.append(pasv)
                port = pasv.getsockname()[1]
                self._send(ctrl, f"227 Entering Passive Mode (127,0,0,1,{port >> 8},{port & 255})")
            elif verb in self.transfers and pasv is not None:
                self._transfer(ctrl, pasv, verb, arg)
                pasv = None
            else:
                self._send(ctrl, "502 not implemented here")

    def _mlst(self, ctrl: socket.socket, path: str) -> None:
        if self.mode == "reply" and "drip" in path:
            self._drip(ctrl, b"250-still looking\r\n")
        self._send(ctrl, f"250-Listing {path}\r\n type=file;size=3;modify=20231114221320; {path}\r\n250 End")

    def _transfer(self, ctrl: socket.socket, pasv: socket.socket, verb: str, path: str) -> None:
        pasv.settimeout(5)
        data, _addr = pasv.accept()
        pasv.close()
        self._send(ctrl, "150 opening data connection")
        if self.tls:
            data = self._tls.wrap_socket(data, server_side=True)
        self._open.append(data)
        with data:
            self._payload(data, verb, path)
            if isinstance(data, ssl.SSLSocket):
                with contextlib.suppress(OSError, ssl.SSLError):
                    data.unwrap()
        self._send(ctrl, "226 transfer complete")

    def _payload(self, data: socket.socket, verb: str, path: str) -> None:
        """What a transfer sends over its data connection."""
        if self.mode == "data" and "drip" in path:
            self._drip(data, b"type=file;size=1; a\r\n" if verb == "MLSD" else b"x", then=b"x")
        data.sendall(b"type=file;size=3;modify=20231114221320; ok.json\r\n" if verb == "MLSD" else b"abc")

    # -- helpers -------------------------------------------------------------------
    def _send(self, sock: socket.socket, reply: str) -> None:
        try:
            sock.sendall(reply.encode("latin-1") + b"\r\n")
        except OSError as err:
            raise _Gone from err

    def _drip(self, sock: socket.socket, first: bytes, *, then: bytes | None = None) -> None:
        """Send ``first``, then ``then`` (default: ``first`` again) every ``interval`` seconds until stopped."""
        chunk = first
        while not self._stop.wait(self.interval):
            try:
                sock.sendall(chunk)
            except OSError as err:  # the client gave up: what the tests want
                raise _Gone from err
            chunk = then if then is not None else first
        raise _Gone
