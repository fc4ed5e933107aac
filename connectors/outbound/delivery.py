"""Delivery: claim due exports, freeze their files, upload them atomically, record each outcome.

Crash safety (the argument is written out in docs/delivery.md):
- the file name and bytes are fixed and archived (committed) *before* the
  first upload, so every retry of an export uploads the same bytes under the
  same name;
- an export is claimed with a conditional UPDATE and a short lease that the
  run renews while it works, so two workers never deliver it at once and a
  dead worker's claim expires within about a minute;
- each export is marked SENT within moments of its rename (outcomes are
  written in small chunks), so a crash re-sends at most the files in flight;
- when the final file is already in the dropzone (a crash after the rename,
  before the database update), its bytes are compared with the archive: the
  same → SENT without uploading again; different → FAILED, never overwritten.

The run's own thread does all database work (freezing the next files,
recording outcomes, renewing the lease) while the transport's lanes upload.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from ..contract.mapping import MappingError
from ..contract.payloads import PayloadError
from ..models import ERPConnection, ERPExport
from ..services import lifecycle
from ..services.lifecycle import Change, Outcome, Verb
from ..services.rowwrites import update_rows
from ..transports import ErrorCode, Transport, TransportError
from ..work.budget import Budget, cut_off_error
from ..work.leases import Lease, lease_until, new_token
from ..work.sessions import Session
from .documents import build_export_file, prefetch_lines

BATCH_LIMIT = 200  # exports per run: one run ends well inside the task timeout
TASK_SECONDS = 50  # a delivery task keeps starting runs this long: within the minute schedule
FREEZE_CHUNK = 25  # files frozen (archived and committed) per transaction, ahead of their upload
FLUSH_EVERY = 20  # outcomes written per transaction ...
FLUSH_SECONDS = 0.25  # ... or after this long, so a crash re-sends at most a few files
BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 3600
Frozen = tuple[ERPExport, bytes]  # an export and its file's bytes, archived before the first upload
FOUND_NOTE = " (found already in the dropzone after an interrupted run)"


def backoff(attempts: int) -> timedelta:
    """30 s, 60 s, 120 s … capped at one hour."""
    return timedelta(seconds=min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS))


@dataclass
class DeliveryReport:
    connection: str
    sent: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    lost: int = 0  # outcomes not written: the claim had been taken over by another worker
    bytes_sent: int = 0  # of the files the dropzone took (/metrics)

    @property
    def handled(self) -> int:
        return len(self.sent) + len(self.retrying) + len(self.failed) + self.lost

    def __str__(self) -> str:
        return (f"{self.connection}: {len(self.sent)} sent, {len(self.retrying)} to retry, "
                f"{len(self.failed)} failed" + (f", {self.lost} taken over by another worker" if self.lost else ""))


def _unclaimed_and_due(now: datetime) -> Q:
    """Conditions on the export row itself (no join), so an UPDATE can re-check them row by row."""
    return (Q(status=ERPExport.Status.PENDING)
            & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            & (Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)))


def due_exports(now: datetime | None = None) -> QuerySet[ERPExport]:
    """PENDING exports of active connections whose time has come and that nobody holds.

    A deactivated connection's exports wait (with their frozen file) until it is active again.
    """
    return ERPExport.objects.filter(_unclaimed_and_due(now or timezone.now()), connection__is_active=True)


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
    token = new_token()
    candidates = list(due_exports().filter(connection=connection).order_by("created_at")
                      .values_list("pk", flat=True)[:limit])
    if not candidates:
        return []
    ERPExport.objects.filter(_unclaimed_and_due(now), pk__in=candidates).update(
        claim_token=token, claimed_until=lease_until(now), attempts=F("attempts") + 1
    )
    claimed = list(ERPExport.objects.filter(claim_token=token).order_by("created_at").defer(None)
                   .select_related("draft__organization"))
    for export in claimed:  # the row we have, not one copy per export (its JSON fields cost a decode each)
        export.connection = connection
    to_build = ERPExport.objects.filter(claim_token=token, payload=None).values("draft_id")  # a retry never builds
    prefetch_lines([export.draft for export in claimed if export.payload is None], draft_ids=to_build)
    return claimed


def _freeze(exports: Sequence[ERPExport], connection: ERPConnection) -> list[tuple[ERPExport, bytes | Exception]]:
    """Fix name and bytes once (archived and committed before any upload); later attempts read them back."""
    frozen: list[tuple[ERPExport, bytes | Exception]] = []
    new: list[ERPExport] = []
    for export in exports:
        if export.payload is not None:
            frozen.append((export, bytes(export.payload)))  # PostgreSQL gives a memoryview
            continue
        if export.filename:  # frozen, but its archive was not found when it moved into the database (0012)
            frozen.append((export, PayloadError(
                f"its archived file was lost, so the bytes of {export.filename} cannot be sent again; "
                "cancel this export and push the draft again")))
            continue
        generated_at = timezone.now().replace(microsecond=0)
        try:
            name, data = build_export_file(draft=export.draft, export_id=export.id, generated_at=generated_at,
                                           mapping=connection.mapping)
        except (PayloadError, MappingError) as err:
            frozen.append((export, err))
            continue
        export.filename = name
        export.payload_sha256 = hashlib.sha256(data).hexdigest()
        export.payload_size = len(data)
        export.payload = data
        new.append(export)
        frozen.append((export, data))
    with transaction.atomic():
        update_rows(ERPExport, {e.pk: {"filename": e.filename, "payload": e.payload,
                                       "payload_sha256": e.payload_sha256, "payload_size": e.payload_size}
                                for e in new})
    return frozen


class _Run:
    """One delivery run over one open transport: the outcomes, buffered and written in small chunks."""

    def __init__(self, connection: ERPConnection, token: object, report: DeliveryReport) -> None:
        self.connection = connection
        self.token = token
        self.report = report
        self.lease = Lease(ERPExport.objects.filter(claim_token=token, status=ERPExport.Status.PENDING),
                           until_field="claimed_until", token=token)  # type: ignore[arg-type]
        self.buffer: dict[Verb, list[tuple[Change, str]]] = {}
        self.flushed_at = time.monotonic()
        self.now = timezone.now()  # one time per chunk of outcomes (moved on at each flush): uniform rows
        self.recorded: set[object] = set()

    # -- what happened to each export ------------------------------------------
    def sent(self, export: ERPExport, note: str = "") -> None:
        self._add(Verb.DELIVERED, lifecycle.delivered(export, note=note, now=self.now), str(export))

    def fault(self, export: ERPExport, error: str, *, permanent: bool, code: str = "") -> None:
        max_attempts = self.connection.max_attempts
        if permanent or export.attempts >= max_attempts:
            reason = error if permanent else f"gave up after {export.attempts} attempts: {error}"
            change = lifecycle.delivery_failed(export, reason=reason)
            change.details["code"] = code
            self._add(Verb.DELIVERY_FAILED, change, str(export))
            return
        wait = backoff(export.attempts)
        message = (f"Delivery of {export} failed (attempt {export.attempts} of {max_attempts}), "
                   f"retrying in {int(wait.total_seconds())} s: {error}")
        self._add(Verb.RETRY_LATER, lifecycle.retry_later(export, error=error, next_attempt_at=timezone.now() + wait,
                                                          message=message), str(export))

    def _add(self, verb: Verb, change: Change, name: str) -> None:
        self.recorded.add(change.export_id)
        self.buffer.setdefault(verb, []).append((change, name))

    # -- writing them ----------------------------------------------------------------
    def flush_if_due(self) -> None:
        waiting = sum(len(v) for v in self.buffer.values())
        if waiting >= FLUSH_EVERY or (waiting and time.monotonic() - self.flushed_at >= FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        tallies = {Verb.DELIVERED: self.report.sent, Verb.RETRY_LATER: self.report.retrying,
                   Verb.DELIVERY_FAILED: self.report.failed}
        buffer, self.buffer = self.buffer, {}
        for verb, items in buffer.items():
            kind = "delivery_retry" if verb == Verb.RETRY_LATER else None
            results = lifecycle.transition(verb, [c for c, _ in items], token=self.token, kind=kind)  # type: ignore[arg-type]
            for (_change, name), result in zip(items, results, strict=True):
                if result.outcome == Outcome.DONE:
                    tallies[verb].append(name)
                else:
                    self.report.lost += 1
        self.flushed_at = time.monotonic()
        self.now = timezone.now()


def _upload(directory: str) -> Callable[[Transport, list[Frozen]], list[str | TransportError]]:
    """What a lane runs for a batch: put atomically; an existing file is ours only with our bytes.

    Each export's result is a note for its SENT event ("" when nothing is to be said) or its error.
    """

    def ours(lane: Transport, export: ERPExport, data: bytes) -> bool:
        return lane.holds_file(directory, export.filename, sha256=export.payload_sha256,
                               size=export.payload_size or len(data))

    def settle(lane: Transport, export: ERPExport, data: bytes, err: TransportError) -> str | TransportError:
        if err.code == ErrorCode.EXISTS:
            if ours(lane, export, data):
                return FOUND_NOTE
            return TransportError(f"a different file named {export.filename} is already in the dropzone; "
                                  "not overwritten", permanent=True, code=ErrorCode.EXISTS)
        # A fault that may have come after the server renamed (a lost reply): look before retrying.
        try:
            landed = not err.permanent and lane.stat(lane.join(directory, export.filename)) is not None
            if landed and ours(lane, export, data):
                return " (the server renamed it although the reply was lost)"
        except TransportError:
            pass
        return err

    def put(lane: Transport, batch: list[Frozen]) -> list[str | TransportError]:
        results = lane.put_batch(directory, [(export.filename, data) for export, data in batch])
        return ["" if isinstance(result, str) else settle(lane, export, data, result)
                for (export, data), result in zip(batch, results, strict=True)]

    return put


def deliver_due_exports(*, connection: ERPConnection, limit: int = BATCH_LIMIT,
                        session: Session | None = None, budget: Budget | None = None) -> DeliveryReport:
    """One delivery run (a slice of up to ``limit`` exports) for one connection over one open transport
    (``session``'s, or its own).  ``budget``: its wall-clock budget; past it the connection is cut and the
    exports not yet delivered are retried later, recorded as cut off.

    Never raises TransportError.
    """
    report = DeliveryReport(connection=str(connection))
    claimed = claim_due_exports(connection=connection, limit=limit)
    if not claimed:
        return report
    run = _Run(connection, claimed[0].claim_token, report)

    def files() -> Iterator[Frozen]:
        for start in range(0, len(claimed), FREEZE_CHUNK):
            if not run.lease.keep():
                return  # another worker holds them now
            for export, data in _freeze(claimed[start:start + FREEZE_CHUNK], connection):
                if isinstance(data, Exception):
                    run.fault(export, f"cannot build the file: {data}", permanent=True)
                else:
                    yield export, data

    own = session is None
    session = session or Session(connection)
    try:
        with budget.cutting(session.abort) if budget else nullcontext():
            _upload_all(session, run, files(), budget)
        if session.faulted:
            session.drop()  # a fault that may heal: the next run starts on a fresh connection
        if budget is not None and budget.cut_off.is_set():
            ERPConnection.objects.filter(pk=connection.pk).update(last_error_code=ErrorCode.OVER_BUDGET)
    except TransportError as err:  # the connection itself failed: every export not yet recorded shares it
        session.drop()
        if budget is not None and budget.cut_off.is_set():
            err = cut_off_error(budget, "delivery", err)
        for export in claimed:
            if export.pk not in run.recorded:
                run.fault(export, err.message, permanent=err.permanent, code=err.code)
        ERPConnection.objects.filter(pk=connection.pk).update(last_error_code=err.code)
    else:
        if (report.sent or run.buffer.get(Verb.DELIVERED)) and not (budget and budget.cut_off.is_set()):
            ERPConnection.objects.filter(pk=connection.pk).exclude(last_error_code="").update(last_error_code="")
    finally:
        if own:
            session.close()
    run.flush()  # not in `finally`: a run that is killed records nothing more (its lease expires)
    return report


def _upload_all(session: Session, run: _Run, files: Iterator[Frozen], budget: Budget | None) -> None:
    """Upload over the lanes, recording each outcome as it comes; a fault that may heal marks the session."""
    transport = session.transport()
    uploads = transport.parallel_batches(_upload(run.connection.export_path), files, size=transport.put_batch_size)
    with closing(uploads) as results:
        for result in results:
            if result is not None:
                (export, data), outcome = result
                if isinstance(outcome, TransportError):
                    if budget is not None and budget.cut_off.is_set():
                        outcome = cut_off_error(budget, "delivery", outcome)
                    run.fault(export, outcome.message, permanent=outcome.permanent, code=outcome.code)
                    if not outcome.permanent:
                        session.faulted = True
                else:
                    run.sent(export, outcome)
                    run.report.bytes_sent += len(data)
            elif not run.lease.keep():
                break
            run.flush_if_due()
