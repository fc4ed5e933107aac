"""A fresh SSH key pair for a connection: the private half stored encrypted, the public half to hand out."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..models import ConnectorEvent, ERPConnection
from ..transports.ssh_keys import fingerprint, parse_public_key
from .events import record_event


def generate_key_pair(*, connection: ERPConnection, actor: str) -> str:
    """Replace the connection's private key with a new Ed25519 one; returns the public key line.

    The private key never leaves this process unencrypted: it is stored like a typed secret and shown nowhere.
    """
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode('ascii')} orderflow-{connection.organization.slug}-{connection.pk}"
    replaced = bool(connection.private_key)
    connection.private_key = private
    connection.private_key_passphrase = ""
    connection.client_public_key = line
    connection.save()
    record_event(kind="key_pair_generated", connection=connection, actor=actor,
                 level=ConnectorEvent.Level.WARNING if replaced else ConnectorEvent.Level.INFO,
                 message=f"{actor} generated a new key pair {fingerprint(parse_public_key(line)[1])}"
                         + (" (the previous private key was replaced)" if replaced else "")
                         + "; the ERP's admin must authorize its public key",
                 details={"public_key": line})
    return line
