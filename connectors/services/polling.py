"""Ack polling (dropzone JSON v1 §3–§5): read ack/error files, apply them, file them away.

Each run claims a connection with a conditional UPDATE and a lease, so any
number of clusters split the connections and never poll one at once.  An ack
is applied in a transaction *before* its file is moved; if the move fails, the
next poll finds the export already answered and files the ack as a duplicate:
nothing is applied twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from connectors.transports import ErrorCode
from orderflow.models import DraftOrder

from ..acks import ACK_MAX_BYTES, Ack, MalformedAck, classify_name, parse_ack
from ..models import ConnectorEvent, ERPConnection, ERPExport
from ..transports import RemoteFile, Transport, TransportError, get_transport
from .delivery import claim_lease
from .events import record_event

ANSWERED = (ERPExport.Status.ACKED, ERPExport.Status.FAILED)
# One run reads at most this many acks, so it ends well inside the task timeout.
MAX_ACKS_PER_POLL = 500
RENEW_EVERY = 25  # files between two renewals of the poll claim


@dataclass
class PollReport:
    connection: str
    outcomes: dict[str, int] = field(default_factory=dict)
    error: str = ""
    more: bool = False  # files were left for the next run by MAX_ACKS_PER_POLL

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def __str__(self) -> str:
        if self.error:
            return f"{self.connection}: poll failed: {self.error}"
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items())) or "no ack files"
        return f"{self.connection}: {counts}"


def due_connections() -> QuerySet[ERPConnection]:
    now = timezone.now()
    return ERPConnection.objects.filter(is_active=True).filter(
        Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now)
    ).filter(Q(poll_claimed_until__isnull=True) | Q(poll_claimed_until__lt=now))


def claim_connection(*, connection_id: int, force: bool = False) -> uuid.UUID | None:
    """Claim an active connection whose poll is due (``force``: due or not); None if someone has it."""
    now = timezone.now()
    token = uuid.uuid4()
    if force:
        rows = ERPConnection.objects.filter(pk=connection_id, is_active=True).filter(
            Q(poll_claimed_until__isnull=True) | Q(poll_claimed_until__lt=now)
        )
    else:
        rows = due_connections().filter(pk=connection_id)
    claimed = rows.update(poll_claim_token=token, poll_claimed_until=now + claim_lease())
    return token if claimed else None


def _stable(conn: ERPConnection, item: RemoteFile, now: float) -> bool:
    """Not growing: unchanged since the previous listing, and old enough."""
    previous = conn.ack_listing.get(item.name)
    if previous is not None and previous != [item.size, item.mtime]:
        return False
    return item.mtime is None or now - item.mtime >= conn.min_ack_age_seconds


def _match(conn: ERPConnection, ack: Ack) -> ERPExport | None:
    exports = ERPExport.objects.select_for_update().filter(connection=conn)
    if ack.export_id is not None:
        return exports.filter(pk=ack.export_id).first()
    if ack.export_filename:
        return exports.filter(filename=ack.export_filename).first()
    return exports.filter(filename=f"{ack.name_key}.json").first()


@transaction.atomic
def apply_ack(*, connection: ERPConnection, ack: Ack, file_name: str) -> tuple[str, str, ERPExport | None]:
    """Apply one parsed ack (§4). Returns (outcome, message, export); outcome decides the target dir."""
    export = _match(connection, ack)
    if export is None:
        return "unmatched", f"{file_name} matches no export of this connection", None
    if export.status in ANSWERED:
        return "duplicate", f"{file_name}: {export} was already answered ({export.status}); first answer kept", export
    now = timezone.now()
    draft_update: dict[str, object] = {"updated_at": now}
    if ack.kind == "ack":
        export.status, export.acked_at = ERPExport.Status.ACKED, now
        export.ack_body, export.erp_order_number = ack.body, ack.erp_order_number or ""
        draft_update.update(status=DraftOrder.Status.CONFIRMED, erp_order_id=export.erp_order_number)
        outcome, message = "accepted", f"{export} accepted by the ERP as {export.erp_order_number}"
    else:
        export.status, export.errors, export.ack_body = ERPExport.Status.FAILED, ack.errors, ack.body
        export.last_error = "; ".join(str(e.get("message", e)) for e in ack.errors) or (ack.message or "rejected")
        draft_update["status"] = DraftOrder.Status.REJECTED
        outcome, message = "rejected", f"{export} rejected by the ERP: {export.last_error}"
    # An ack can beat our own "SENT" update (the ERP was faster): the file was delivered all the same.
    export.sent_at = export.sent_at or now
    export.claim_token = export.claimed_until = None
    export.save()
    DraftOrder.objects.filter(pk=export.draft_id).update(**draft_update)
    return outcome, message, export


def _handle_file(conn: ERPConnection, transport: Transport, item: RemoteFile, report: PollReport) -> bool:
    """Read, apply, file away one ack; True when the file left the ack dir."""
    path = transport.join(conn.ack_path, item.name)
    export = None
    try:
        data = transport.read_file(path, max_bytes=ACK_MAX_BYTES)
        ack = parse_ack(item.name, data)
    except TransportError as err:
        if err.code == ErrorCode.NOT_FOUND:  # gone since the listing (the ERP withdrew it, a person moved it)
            report.count("vanished")
            return True
        if err.code != ErrorCode.TOO_LARGE:
            raise
        outcome, message = "malformed", f"{item.name}: over the {ACK_MAX_BYTES} byte limit"
    except MalformedAck as err:
        outcome, message = "malformed", f"{item.name}: {err.reason}"
    else:
        outcome, message, export = apply_ack(connection=conn, ack=ack, file_name=item.name)
    target = conn.effective_failed_path if outcome in ("malformed", "unmatched") else conn.effective_processed_path
    details: dict[str, object] = {"file": item.name, "outcome": outcome}
    moved = False
    try:
        details["moved_to"] = transport.move_no_overwrite(path, target)
        moved = True
    except TransportError as err:
        details["move_error"] = err.message
        message += f" (could not move the file: {err.message}; the next poll files it)"
    level = {"accepted": "info", "rejected": "warning", "duplicate": "info"}.get(outcome, "error")
    record_event(kind=f"ack_{outcome}", connection=conn, export=export, level=level, message=message,
                 details=details)
    report.count(outcome)
    return moved


def _renew_claim(conn: ERPConnection, token: uuid.UUID) -> bool:
    """Extend our lease; False when it expired and another poller holds the connection now."""
    return bool(ERPConnection.objects.filter(pk=conn.pk, poll_claim_token=token).update(
        poll_claimed_until=timezone.now() + claim_lease()))


def _poll(conn: ERPConnection, transport: Transport, report: PollReport, token: uuid.UUID) -> dict[str, list]:
    """Handle the ack dir once; returns what stays there (name -> [size, mtime]) for the next poll."""
    listing = [f for f in transport.list_dir(conn.ack_path) if classify_name(f.name)]
    now = timezone.now().timestamp()
    remaining: dict[str, list] = {}
    handled = 0
    for item in sorted(listing, key=lambda f: (f.mtime or 0, f.name)):
        if handled >= MAX_ACKS_PER_POLL:  # bounded run; the rest is stable next time and goes first
            report.more = True
        elif not _stable(conn, item, now):
            report.count("still being written")
            record_event(kind="ack_waiting", connection=conn, message=f"{item.name} is still being written; "
                         "left for the next poll", details={"file": item.name, "size": item.size})
        else:
            handled += 1
            if handled % RENEW_EVERY == 0 and not _renew_claim(conn, token):
                raise TransportError("the poll outlived its claim and another poller took over; stopped",
                                     code="claim_lost")
            if _handle_file(conn, transport, item, report):
                continue
        remaining[item.name] = [item.size, item.mtime]
    return remaining


def poll_connection(*, connection: ERPConnection, force: bool = False) -> PollReport | None:
    """One poll of one connection over one open transport; None when it is not due or someone else polls it."""
    token = claim_connection(connection_id=connection.pk, force=force)
    if token is None:
        return None
    connection.refresh_from_db()
    report = PollReport(connection=str(connection))
    listing = connection.ack_listing
    transport = get_transport(connection.transport_settings())
    try:
        transport.open()
        for path in (connection.effective_processed_path, connection.effective_failed_path):
            transport.makedirs(path)
        listing = _poll(connection, transport, report, token)
    except TransportError as err:
        report.error = err.message
        record_event(kind="poll_failed", connection=connection, level=ConnectorEvent.Level.ERROR,
                     message=f"Polling {connection.ack_path} failed: {err.message}")
    finally:
        transport.close()
        now = timezone.now()
        ERPConnection.objects.filter(pk=connection.pk, poll_claim_token=token).update(
            last_poll_at=now, last_poll_ok=not report.error, last_poll_message=str(report), ack_listing=listing,
            next_poll_at=now if report.more else now + timedelta(seconds=connection.poll_interval_seconds),
            poll_claim_token=None, poll_claimed_until=None,
        )
    return report
