"""Delivery: claim due exports, render and archive them, upload atomically.

Crash safety (the argument is written out in docs/delivery.md):
- the file name and bytes are fixed and archived *before* the first upload,
  so every retry of an export uploads the same bytes under the same name;
- an export is claimed with a conditional UPDATE and a lease, so two workers
  never deliver it at once, and a dead worker's claim expires;
- when the final file is already in the dropzone (a crash after the rename,
  before the database update), its bytes are compared with the archive: the
  same → marked SENT without uploading again; different → FAILED, never
  overwritten.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from connectors.transports import ErrorCode
from orderflow.models import DraftOrder

from ..mapping import MappingError
from ..models import ConnectorEvent, ERPConnection, ERPExport
from ..payloads import PayloadError
from ..transports import Transport, TransportError, get_transport
from .documents import build_export_file
from .events import record_event

BATCH_LIMIT = 200
BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 3600


def claim_lease() -> timedelta:
    """How long a claim holds: as long as django-q2 lets a task run, then it may be rescued."""
    return timedelta(seconds=settings.Q_CLUSTER["timeout"])


def backoff(attempts: int) -> timedelta:
    """30 s, 60 s, 120 s … capped at one hour."""
    return timedelta(seconds=min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS))


@dataclass
class DeliveryReport:
    connection: str
    sent: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.connection}: {len(self.sent)} sent, {len(self.retrying)} to retry, "
                f"{len(self.failed)} failed")


def _unclaimed_and_due(now: datetime) -> Q:
    """Conditions on the export row itself (no join), so an UPDATE can re-check them row by row."""
    return (Q(status=ERPExport.Status.PENDING)
            & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            & (Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)))


def due_exports() -> QuerySet[ERPExport]:
    """PENDING exports of active connections whose time has come and that nobody holds.

    A deactivated connection's exports wait (with their frozen file) until it is active again.
    """
    return ERPExport.objects.filter(_unclaimed_and_due(timezone.now()), connection__is_active=True)


def claim_due_exports(*, connection: ERPConnection, limit: int = BATCH_LIMIT) -> list[ERPExport]:
    """Claim up to ``limit`` due exports for this run; each gets one more attempt counted.

    The UPDATE names the candidate ids and repeats the conditions on the row
    itself: PostgreSQL re-checks those after waiting for a racing worker's row
    lock, so only one of two racing workers gets an export.  (A filter across
    a join would make Django write ``WHERE id IN (subquery)``, whose snapshot
    is not re-checked: both workers would win; tests/integration shows it.)
    SQLite serialises writers.
    """
    now = timezone.now()
    token = uuid.uuid4()
    candidates = list(due_exports().filter(connection=connection).order_by("created_at")
                      .values_list("pk", flat=True)[:limit])
    if not candidates:
        return []
    ERPExport.objects.filter(_unclaimed_and_due(now), pk__in=candidates).update(
        claim_token=token, claimed_until=now + claim_lease(), attempts=F("attempts") + 1
    )
    return list(ERPExport.objects.filter(claim_token=token).select_related("draft__organization", "connection"))


def _archive(export: ERPExport, connection: ERPConnection) -> bytes:
    """Fix name and bytes once; later attempts read the archive back."""
    if export.payload:
        with export.payload.open("rb") as fh:
            return fh.read()
    generated_at = timezone.now().replace(microsecond=0)
    name, data = build_export_file(
        draft=export.draft, export_id=export.id, generated_at=generated_at, mapping=connection.mapping
    )
    export.filename = name
    export.payload_sha256 = hashlib.sha256(data).hexdigest()
    export.payload_size = len(data)
    export.payload.save(name, ContentFile(data), save=False)
    export.save(update_fields=["filename", "payload", "payload_sha256", "payload_size"])
    return data


def _already_delivered(transport: Transport, export: ERPExport, directory: str, data: bytes) -> bool:
    """After ErrorCode.EXISTS: is the file in the dropzone ours (same bytes)?"""
    path = transport.join(directory, export.filename)
    try:
        existing = transport.read_file(path, max_bytes=len(data))
    except TransportError:
        return False
    try:  # a stale temp file of an earlier attempt is ours to clean up
        if transport.stat(path + transport.settings.temp_suffix) is not None:
            transport.remove(path + transport.settings.temp_suffix)
    except TransportError:
        pass
    return hashlib.sha256(existing).hexdigest() == export.payload_sha256


def _release(export: ERPExport, **fields: object) -> bool:
    """Write the outcome only while we still hold the claim (a rescued export is someone else's now)."""
    fields.setdefault("claim_token", None)
    fields.setdefault("claimed_until", None)
    held = ERPExport.objects.filter(pk=export.pk, claim_token=export.claim_token, status=ERPExport.Status.PENDING)
    return bool(held.update(**fields))


def mark_sent(export: ERPExport, *, note: str = "") -> None:
    with transaction.atomic():
        if not _release(export, status=ERPExport.Status.SENT, sent_at=timezone.now(), last_error=""):
            return
        DraftOrder.objects.filter(pk=export.draft_id, status=DraftOrder.Status.APPROVED).update(
            status=DraftOrder.Status.PUSHED, erp_order_id=export.filename, updated_at=timezone.now()
        )
        record_event(kind="delivered", export=export, connection=export.connection,
                     message=f"Delivered {export.filename}{note}",
                     details={"sha256": export.payload_sha256, "size": export.payload_size})


def mark_failed_or_retry(export: ERPExport, *, error: str, permanent: bool) -> str:
    """Permanent fault or spent budget → FAILED (draft PUSH_FAILED); otherwise back-off. Returns the outcome."""
    max_attempts = export.connection.max_attempts if export.connection else 1
    with transaction.atomic():
        if permanent or export.attempts >= max_attempts:
            reason = error if permanent else f"gave up after {export.attempts} attempts: {error}"
            if not _release(export, status=ERPExport.Status.FAILED, last_error=reason, next_attempt_at=None):
                return "lost-claim"
            DraftOrder.objects.filter(pk=export.draft_id).update(
                status=DraftOrder.Status.PUSH_FAILED, updated_at=timezone.now()
            )
            record_event(kind="delivery_failed", export=export, connection=export.connection,
                         level=ConnectorEvent.Level.ERROR, message=f"Delivery of {export} failed: {reason}")
            return "failed"
        wait = backoff(export.attempts)
        if not _release(export, last_error=error, next_attempt_at=timezone.now() + wait):
            return "lost-claim"
        record_event(kind="delivery_retry", export=export, connection=export.connection,
                     level=ConnectorEvent.Level.WARNING,
                     message=f"Delivery of {export} failed (attempt {export.attempts} of {max_attempts}), "
                             f"retrying in {int(wait.total_seconds())} s: {error}")
        return "retrying"


def _tally(report: DeliveryReport, export: ERPExport, outcome: str) -> None:
    {"failed": report.failed, "retrying": report.retrying}.get(outcome, []).append(str(export))


def deliver_due_exports(*, connection: ERPConnection, limit: int = BATCH_LIMIT) -> DeliveryReport:
    """One delivery run for one connection over one open transport. Never raises TransportError."""
    report = DeliveryReport(connection=str(connection))
    claimed = claim_due_exports(connection=connection, limit=limit)
    if not claimed:
        return report
    ready: list[tuple[ERPExport, bytes]] = []
    for export in claimed:
        try:
            ready.append((export, _archive(export, connection)))
        except (PayloadError, MappingError) as err:
            _tally(report, export, mark_failed_or_retry(export, error=f"cannot build the file: {err}",
                                                        permanent=True))
    if not ready:
        return report
    transport = get_transport(connection.transport_settings())
    try:
        transport.open()
        results = transport.put_many(connection.export_path, [(e.filename, data) for e, data in ready])
        for (export, data), (_name, result) in zip(ready, results, strict=True):
            if not isinstance(result, TransportError):
                mark_sent(export)
                report.sent.append(str(export))
            elif result.code == ErrorCode.EXISTS and _already_delivered(transport, export, connection.export_path,
                                                                        data):
                mark_sent(export, note=" (found already in the dropzone after an interrupted run)")
                report.sent.append(str(export))
            elif result.code == ErrorCode.EXISTS:
                _tally(report, export, mark_failed_or_retry(
                    export, permanent=True,
                    error=f"a different file named {export.filename} is already in the dropzone; not overwritten"))
            else:
                _tally(report, export, mark_failed_or_retry(export, error=result.message,
                                                            permanent=result.permanent))
    except TransportError as err:  # the connection itself failed: every claimed export shares the fault
        for export, _data in ready:  # those already recorded are no longer held: "lost-claim", not counted
            _tally(report, export, mark_failed_or_retry(export, error=err.message, permanent=err.permanent))
    finally:
        transport.close()
    return report
