"""Test connection: every step an admin needs to trust a dropzone, each timed.

Steps: TCP, server identity (with its SHA256 fingerprint), authentication
(recorded by the transport while it opens), then the dropzone itself: the
export dir is writable (write, rename, delete a probe file), the ack dir is
listable, the processed/failed dirs can be created, and whether the server's
rename overwrites an existing file.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field

from ..models import ConnectorEvent, ERPConnection
from ..transports import LISTING_LIMIT, HostKeyError, Step, Transport, TransportError, get_transport
from ..transports.base import timed_step
from .events import record_event


@dataclass
class ConnectionTestResult:
    ok: bool
    steps: list[Step] = field(default_factory=list)
    error: str = ""
    #: Set when the server's identity is not the pinned one: what an admin may pin.
    host_key_error: HostKeyError | None = None
    event: ConnectorEvent | None = None  # where the result is kept (the pin button names it)
    code: str = ""  # the failing step's ErrorCode

    @property
    def summary(self) -> str:
        if self.ok:
            return f"Connection test passed ({len(self.steps)} steps)."
        return f"Connection test failed: {self.error}"


def _probe_rename_overwrites(transport: Transport, directory: str, token: str) -> bool:
    """Does the server's own rename replace an existing target?  Cleans up after itself."""
    first = transport.join(directory, f".orderflow-probe-{token}-a")
    second = transport.join(directory, f".orderflow-probe-{token}-b")
    transport.write_file(first, b"a")
    transport.write_file(second, b"b")
    try:
        transport.rename(first, second)
        overwrites = True
    except TransportError:
        overwrites = False
    finally:
        for path in (first, second):
            with suppress(TransportError):  # already renamed away
                transport.remove(path)
    return overwrites


def _dropzone_steps(conn: ERPConnection, transport: Transport, steps: list[Step]) -> None:
    token = uuid.uuid4().hex[:12]

    def export_writable(step: Step) -> None:
        probe = f".orderflow-probe-{token}"
        final = transport.put_atomic(conn.export_path, probe, b"orderflow connection test\n")
        transport.remove(final)
        step.detail = f"wrote, renamed and deleted {probe} in {conn.export_path}"

    def ack_listable(step: Step) -> None:
        files = transport.list_dir(conn.ack_path, limit=LISTING_LIMIT)
        step.detail = (f"{len(files)} file(s) in {conn.ack_path}" if not files.truncated else
                       f"more than {LISTING_LIMIT} entries in {conn.ack_path}: each poll reads the first ones")

    def archive_dirs(step: Step) -> None:
        for path in (conn.effective_processed_path, conn.effective_failed_path):
            transport.makedirs(path)
        step.detail = f"{conn.effective_processed_path} and {conn.effective_failed_path} exist"

    def rename_semantics(step: Step) -> None:
        if _probe_rename_overwrites(transport, conn.export_path, token):
            step.detail = ("the server's rename replaces existing files; orderflow checks for the final "
                           "name before renaming (a small race remains if another writer uses the same name)")
        else:
            step.detail = "the server's rename refuses to replace existing files (safest)"

    checks: list[tuple[str, Callable[[Step], None]]] = [
        (f"Export dir {conn.export_path} writable", export_writable),
        (f"Ack dir {conn.ack_path} listable", ack_listable),
        ("Processed and failed dirs", archive_dirs),
        ("Rename semantics", rename_semantics),
    ]
    for name, check in checks:
        with timed_step(steps, name) as step:
            check(step)


def test_connection(*, connection: ERPConnection, actor: str = "") -> ConnectionTestResult:
    """Run every step, stop at the first failure, record a ConnectorEvent; never raises TransportError."""
    result = ConnectionTestResult(ok=False)
    try:
        transport = get_transport(connection.transport_settings())  # may fail: a secret no key can read
        result.steps = transport.steps  # the transport records its own steps while it opens
        with transport:
            _dropzone_steps(connection, transport, result.steps)
        result.ok = True
    except HostKeyError as err:
        result.error, result.host_key_error = err.message, err
    except TransportError as err:
        result.error, result.code = err.message, str(err.code)
    code = "" if result.ok else str(getattr(result.host_key_error, "code", "") or result.code)
    ERPConnection.objects.filter(pk=connection.pk).update(last_error_code=code)
    details: dict[str, object] = {"steps": [asdict(s) for s in result.steps], "code": code}
    if result.host_key_error is not None:
        # What the server presented, kept server-side: pinning takes it from here, never from the browser.
        err = result.host_key_error
        details.update(presented_key=err.presented_key,
                       presented_fingerprint=err.presented_fingerprint, expected_fingerprint=err.expected_fingerprint)
    result.event = record_event(
        kind="connection_test", connection=connection, actor=actor,
        level=ConnectorEvent.Level.INFO if result.ok else ConnectorEvent.Level.ERROR,
        message=result.summary, details=details,
    )
    return result


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


class PinError(ValueError):
    """The key cannot be pinned (shown to the admin)."""


def presented_key(*, connection: ERPConnection, event_id: int) -> str:
    """The key the server presented in that test of this connection; PinError if there is none."""
    event = ConnectorEvent.objects.filter(pk=event_id, connection=connection, kind="connection_test").first()
    key = (event.details or {}).get("presented_key", "") if event else ""
    if not key:
        raise PinError("That test did not offer a key to pin; run the test again.")
    return str(key)


@dataclass
class Pinned:
    changed: bool  # False: that key was pinned already; nothing was saved
    cleared: list[str]  # the stored secrets the pin cleared (a replaced key: maybe another server)
    ca_dropped: bool  # FTPS: the certificate authorities are no longer asked, only the pin


def pin_host_key(*, connection: ERPConnection, host_key: str, user: str) -> Pinned:
    """Trust ``host_key`` (as the server presented it in a test) for this connection, recorded with who.

    A first pin keeps the stored secrets; replacing a pinned key clears them (connectors/endpoints.py):
    they were typed for the server that had the old key.
    """
    previous = connection.host_key.strip()
    if host_key.strip() == previous:
        return Pinned(changed=False, cleared=[], ca_dropped=False)
    connection.host_key = host_key.strip()
    connection.pinned_from_server = True
    connection.save(update_fields=["host_key", "updated_at"])
    cleared = getattr(connection, "secrets_cleared", [])
    record_event(
        kind="host_key_pinned",
        connection=connection, actor=user,
        level=ConnectorEvent.Level.WARNING if previous else ConnectorEvent.Level.INFO,
        message=f"{user} pinned the server's key {_fingerprint(connection.host_key)}"
        + (f", replacing {_fingerprint(previous)}" if previous else "")
        + (f"; the stored {', '.join(cleared)} were cleared and must be typed again" if cleared else ""),
        details={"previous": previous, "pinned": connection.host_key},
    )
    return Pinned(changed=True, cleared=cleared, ca_dropped=connection.transport == "ftps" and not previous)


def _fingerprint(key: str) -> str:
    """SHA256 fingerprint of an OpenSSH key line; an FTPS pin already is one."""
    from ..transports.ssh_keys import fingerprint, parse_public_key

    try:
        return fingerprint(parse_public_key(key)[1])
    except TransportError:
        return key
