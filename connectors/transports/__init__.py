"""Registry of dropzone transports: one dict feeds model choices and lookup."""

from __future__ import annotations

from importlib import import_module

from .base import (
    LISTING_LIMIT,
    ErrorCode,
    HostKeyError,
    Listing,
    RemoteFile,
    Step,
    Transport,
    TransportError,
    TransportSettings,
)

# kind -> (label, default port, "module:Class"); imported lazily so choosing
# "local" never needs paramiko loaded.
TRANSPORTS: dict[str, tuple[str, int | None, str]] = {
    "sftp": ("SFTP (SSH)", 22, "connectors.transports.sftp:SFTPTransport"),
    "ftps": ("FTPS (explicit TLS)", 21, "connectors.transports.ftps:FTPSTransport"),
    "ftp": ("FTP (unencrypted)", 21, "connectors.transports.ftp:FTPTransport"),
    "local": ("Local or mounted directory", None, "connectors.transports.local:LocalTransport"),
}

TRANSPORT_CHOICES = [(kind, label) for kind, (label, _port, _path) in TRANSPORTS.items()]


def default_port(kind: str) -> int | None:
    return TRANSPORTS[kind][1]


def get_transport(settings: TransportSettings) -> Transport:
    """A new, not yet opened transport for ``settings.kind``."""
    try:
        _label, _port, path = TRANSPORTS[settings.kind]
    except KeyError:
        raise TransportError(f"unknown transport {settings.kind!r}", permanent=True, code=ErrorCode.CONFIG) from None
    module_name, class_name = path.split(":")
    cls = getattr(import_module(module_name), class_name)
    return cls(settings)


__all__ = [
    "LISTING_LIMIT",
    "TRANSPORTS",
    "TRANSPORT_CHOICES",
    "ErrorCode",
    "HostKeyError",
    "Listing",
    "RemoteFile",
    "Step",
    "Transport",
    "TransportError",
    "TransportSettings",
    "default_port",
    "get_transport",
]
