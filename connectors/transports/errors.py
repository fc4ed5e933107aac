"""The one error type of every transport, and the reasons it carries (``ErrorCode``).

A module of its own so that what runs transport operations (``lanes``, ``deadline``) can name it
without importing the transport base class.
"""

from __future__ import annotations

from enum import StrEnum


class TransportError(Exception):
    """The one error type of all transports.

    ``permanent`` is True when retrying cannot help (authentication refused,
    host key unknown or changed, permission denied, missing directory, file
    already present).  ``code`` is a short machine-readable reason.
    """

    def __init__(self, message: str, *, permanent: bool = False, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code


def permanent(message: str, code: str) -> TransportError:
    """Shorthand for a fault retrying cannot heal."""
    return TransportError(message, permanent=True, code=code)


class HostKeyError(TransportError):
    """The server's identity is not the pinned one (or none is pinned).

    Carries what an admin needs to decide: the presented key (to pin it) and
    both fingerprints.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        presented_key: str,
        presented_fingerprint: str,
        expected_fingerprint: str = "",
    ) -> None:
        super().__init__(message, permanent=True, code=code)
        self.presented_key = presented_key
        self.presented_fingerprint = presented_fingerprint
        self.expected_fingerprint = expected_fingerprint


class ErrorCode(StrEnum):
    """Why a transport operation failed, for services and tests to branch on (``err.code``)."""

    EXISTS = "exists"
    NOT_FOUND = "not_found"
    PERMISSION = "permission_denied"
    AUTH = "auth_failed"
    HOST_KEY_UNKNOWN = "host_key_unknown"
    HOST_KEY_CHANGED = "host_key_changed"
    TIMEOUT = "timeout"
    REFUSED = "connection_refused"
    DNS = "dns"
    TOO_LARGE = "too_large"
    SIZE_MISMATCH = "size_mismatch"
    NETWORK = "network"
    CONFIG = "config"  # a setting cannot work (unknown transport, unreadable pinned key)
    KEY_INVALID = "key_invalid"  # private key unreadable, or passphrase wrong/missing
    IO = "io_error"  # local: any other OSError (disk full, stale NFS handle…): worth retrying
    SERVER_FAILURE = "server_failure"  # SFTP's catch-all "Failure" status (disk full, …)
    SERVER_REFUSED = "server_refused"  # FTP: another 5xx reply: permanent
    SERVER_TEMPORARY = "server_temporary"  # FTP: another 4xx reply: worth retrying
    SYMLINK = "symlink_refused"  # local: a symbolic link below the dropzone root (never followed)
    OVER_BUDGET = "over_budget"  # the job's wall-clock budget ran out and the engine cut the connection
