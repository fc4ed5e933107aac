"""Real pyftpdlib FTP/FTPS servers on random loopback ports, in a background thread.

Three flavours, all serving the same kind of on-disk home directory so tests can
check results with plain ``pathlib``:

* ``FTPDServer()``            plain FTP with MLSD/MLST;
* ``FTPDServer(tls=True)``    explicit FTPS; TLS is *required* on the control and
  the data channel (self-signed certificate generated with ``cryptography``);
* ``FTPDServer(mlsd=False)``  plain FTP whose handler lacks MLSD/MLST, so clients
  must fall back to NLST + SIZE + MDTM.

Two users share the home directory: ``user`` (read/write) and ``ro_user``
(perm ``elr``, for permission-denied tests).  pyftpdlib's RNTO is ``os.rename``,
which silently replaces an existing target: ``rename_overwrites`` says so, and
is the reason transports must check before renaming.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from connectors.transports.base import TransportSettings

HOST = "127.0.0.1"

# Quiet, and a handler of its own so pyftpdlib never configures the root logger.
_log = logging.getLogger("pyftpdlib")
_log.setLevel(logging.WARNING)
if not _log.handlers:
    _log.addHandler(logging.NullHandler())


def fingerprint(der: bytes) -> str:
    """``SHA256:`` + colon-separated upper-case hex, as ``openssl x509 -fingerprint -sha256`` shows it."""
    return "SHA256:" + ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def make_certificate(directory: Path, hostname: str = "localhost") -> tuple[Path, Path, bytes]:
    """A self-signed certificate for ``hostname`` and 127.0.0.1: (cert file, key file, DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        # CA:TRUE lets a test trust it as a root through SSL_CERT_FILE.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file, cert.public_bytes(serialization.Encoding.DER)


class FTPDServer:
    """One pyftpdlib server; use as a context manager (or ``start``/``stop``)."""

    user, password = "writer", "Wr1te-s3cret-PW"
    ro_user, ro_password = "reader", "R3ad-s3cret-PW"
    #: pyftpdlib's RNTO replaces an existing target (os.rename), like most FTP servers.
    rename_overwrites = True

    def __init__(self, home: Path | None = None, *, tls: bool = False, mlsd: bool = True) -> None:
        self._scratch = Path(tempfile.mkdtemp(prefix="ftpd-"))
        self.home = home or self._scratch / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.tls = tls
        self.kind = "ftps" if tls else "ftp"
        self.fingerprint = ""
        self.certfile: Path | None = None
        #: One entry per data connection the server accepted: was it TLS-protected?
        self.data_channels: list[bool] = []

        authorizer = DummyAuthorizer()
        authorizer.add_user(self.user, self.password, str(self.home), perm="elradfmwMT")
        authorizer.add_user(self.ro_user, self.ro_password, str(self.home), perm="elr")
        # A subclass per server: pyftpdlib keeps its configuration in class attributes.
        attrs: dict[str, object] = {
            "authorizer": authorizer, "banner": "test ftpd ready", "auth_failed_timeout": 0.1,  # fast wrong-password
        }
        if tls:
            self.certfile, keyfile, der = make_certificate(self._scratch)
            self.fingerprint = fingerprint(der)
            records = self.data_channels

            class RecordingDTP(TLS_DTPHandler):
                def __init__(self, sock: object, cmd_channel: object) -> None:
                    super().__init__(sock, cmd_channel)
                    records.append(bool(self._ssl_requested))

            attrs.update(
                certfile=str(self.certfile), keyfile=str(keyfile), ssl_context=None,
                tls_control_required=True, tls_data_required=True, dtp_handler=RecordingDTP,
            )
            base: type[FTPHandler] = TLS_FTPHandler
        else:
            base = FTPHandler
        if not mlsd:
            attrs["proto_cmds"] = {k: v for k, v in base.proto_cmds.items() if k not in ("MLSD", "MLST")}
        handler = type("TestHandler", (base,), attrs)
        # Its own IOLoop: the default one is a process-wide singleton shared by all servers.
        self._server = FTPServer((HOST, 0), handler, ioloop=IOLoop())
        self.port: int = self._server.address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"ftpd-{self.port}", daemon=True)

    def _serve(self) -> None:
        # One short poll at a time so ``stop`` is noticed; close_all runs in this
        # thread because pyftpdlib's IOLoop is not thread-safe.
        while not self._stop.is_set():
            self._server.ioloop.loop(0.05, blocking=False)
        self._server.close_all()

    def start(self) -> FTPDServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def settings(self, *, readonly: bool = False, **overrides: object) -> TransportSettings:
        """Settings for this server (FTPS: with the certificate pinned) for the rw or read-only user."""
        values: dict[str, object] = {
            "kind": self.kind, "host": self.host, "port": self.port,
            "username": self.ro_user if readonly else self.user,
            "password": self.ro_password if readonly else self.password,
            "host_key": self.fingerprint, "connect_timeout": 5.0, "operation_timeout": 10.0,
        }
        values.update(overrides)
        return TransportSettings(**values)  # type: ignore[arg-type]
