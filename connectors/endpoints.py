"""Where a connection's stored secrets may go: a digest of the endpoint they were saved for.

Secrets follow their endpoint.  A password typed for ``user@erp.example.com``
must never be sent anywhere else, whoever edits the row afterwards: the row
keeps this digest next to its secrets, a save that changes the endpoint
without the secrets being typed again clears them, and a transport is never
given secrets whose digest does not match (a change that bypassed ``save``).
"""

from __future__ import annotations

import hashlib

SECRET_FIELDS = ("password", "private_key", "private_key_passphrase")


def endpoint_digest(*, transport: str, host: str, port: int | None, username: str, host_key: str) -> str:
    """The same for the same server identity and login; any change to one of them changes it."""
    parts = (transport, host.strip().lower(), str(port or ""), username, " ".join(host_key.split()))
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()
