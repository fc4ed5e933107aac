"""SSH keys as an admin pastes them: OpenSSH public key lines, private keys in any common format."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
from contextlib import suppress

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .base import ErrorCode, permanent

_KEY_CLASSES = {
    ed25519.Ed25519PrivateKey: paramiko.Ed25519Key,
    rsa.RSAPrivateKey: paramiko.RSAKey,
    ec.EllipticCurvePrivateKey: paramiko.ECDSAKey,
}


def fingerprint(blob: bytes) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_public_key(line: str) -> tuple[str, bytes]:
    """``(type, blob)`` of an OpenSSH public key line; a known_hosts host prefix is skipped."""
    parts = line.split()
    for token, encoded in itertools.pairwise(parts):
        with suppress(ValueError):
            blob = base64.b64decode(encoded, validate=True)
            if blob[4 : 4 + int.from_bytes(blob[:4], "big")] == token.encode():  # the blob names its type
                return token, blob
    raise permanent("the pinned host key is not an OpenSSH public key line ('ssh-ed25519 AAAA…')", ErrorCode.CONFIG)


def load_private_key(text: str, passphrase: str) -> paramiko.PKey:
    """A paramiko key from OpenSSH or PEM (PKCS#1, SEC1, PKCS#8) text, encrypted or not.

    cryptography reads every format; paramiko gets the key re-encoded as
    unencrypted OpenSSH, which all its key classes read (its own PEM readers
    miss PKCS#8).  Messages never quote the key or the passphrase.
    """
    data = text.strip().encode() + b"\n"
    load = serialization.load_ssh_private_key if b"OPENSSH PRIVATE KEY" in data else serialization.load_pem_private_key
    try:
        key = load(data, None)
    except TypeError as err:  # encrypted; a passphrase for a plain key is simply not needed
        if not passphrase:
            raise permanent("the private key is protected by a passphrase, but none is set",
                            ErrorCode.KEY_INVALID) from err
        try:
            key = load(data, passphrase.encode())
        except ValueError as err2:
            raise permanent("the private key could not be decrypted: wrong passphrase", ErrorCode.KEY_INVALID) from err2
    except (ValueError, UnsupportedAlgorithm) as err:
        raise permanent("the private key could not be read (not an OpenSSH or PEM key)",
                        ErrorCode.KEY_INVALID) from err
    cls = next((c for base, c in _KEY_CLASSES.items() if isinstance(key, base)), None)
    if cls is None:
        raise permanent(f"unsupported private key type {type(key).__name__} (use Ed25519/RSA/ECDSA)",
                        ErrorCode.KEY_INVALID)
    openssh, pem = serialization.PrivateFormat.OpenSSH, serialization.Encoding.PEM
    plain = key.private_bytes(pem, openssh, serialization.NoEncryption())
    return cls.from_private_key(io.StringIO(plain.decode()))


