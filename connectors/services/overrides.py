"""What staff do to exports when real life needs it: retry, cancel, record an answer given out of band.

Each goes through the lifecycle's transition table and records who did it
and why in the event timeline.  Nothing here writes a status itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import Q, QuerySet
from django.utils import timezone

from ..contract.acks import ERP_ORDER_NUMBER_MAX
from ..models import ERPExport
from ..transports import TransportError, get_transport
from ..work.leases import lease_until, new_token
from ..work.wake import deliver_soon
from . import lifecycle
from .lifecycle import Change, Outcome, Verb


@dataclass
class Counts:
    done: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # reason -> how many

    @property
    def skipped(self) -> int:
        return sum(self.refused.values())

    def tally(self, results: Iterable[lifecycle.Result]) -> Counts:
        for result in results:
            if result.ok:
                self.done += 1
            else:
                self.refused[lifecycle.refusal(result)] += 1
        return self


class OverrideError(ValueError):
    """Staff input that cannot be used (shown as a form error)."""


def _reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise OverrideError("Say why: the reason is recorded in the export's timeline.")
    return reason[:1000]


def failed_exports(connection: object) -> QuerySet[ERPExport]:
    """The connection's exports whose delivery failed for good and that are still their draft's current one."""
    failed = ERPExport.objects.filter(connection=connection, status=ERPExport.Status.FAILED)
    current = lifecycle.current_export_ids(failed.values_list("draft_id", flat=True))
    return failed.filter(pk__in=list(current.values()))


def retry_exports(*, exports: Iterable[ERPExport], actor: str) -> Counts:
    """Send the same export (same id, name and bytes) again, with a fresh retry budget.

    Only an export that is still its draft's current one and never reached
    the dropzone: an answered or replaced export needs a new push instead.
    """
    exports = list(exports)
    changes = [Change(e.pk, fields={"next_attempt_at": timezone.now(), "attempts": 0},
                      message=f"{actor} asked to retry the delivery of {e}") for e in exports]
    results = lifecycle.transition(Verb.RETRY, changes, actor=actor, kind="delivery_retry_requested")
    for export, result in zip(exports, results, strict=True):
        if result.ok and export.connection_id is not None:
            deliver_soon([export.connection_id])
    return Counts().tally(results)


def _landed(export: ERPExport) -> bool | None:
    """Did an interrupted attempt put our file in the dropzone? None when the dropzone cannot be asked."""
    conn = export.connection
    if conn is None or not export.filename or not export.payload_sha256:
        return False
    try:
        with get_transport(conn.transport_settings()) as transport:
            if transport.stat(transport.join(conn.export_path, export.filename)) is None:
                transport.remove_stale_temp(transport.join(conn.export_path, export.filename))
                return False
            return transport.holds_file(conn.export_path, export.filename, sha256=export.payload_sha256,
                                        size=export.payload_size or 0)
    except TransportError:
        return None


def cancel_exports(*, exports: Iterable[ERPExport], actor: str, reason: str) -> Counts:
    """Withdraw undelivered exports; their drafts become New again (editable, pushable).

    An export that a worker tried before may have reached the dropzone in a
    run that died before recording it: it is claimed (so no worker sends it
    meanwhile) and the dropzone is asked first.  If our file is there, the
    export is marked SENT instead of cancelled.
    """
    why = _reason(reason)
    counts = Counts()
    for export in exports:
        token = new_token()
        note = ""
        if export.status == ERPExport.Status.PENDING and export.attempts:
            now = timezone.now()
            free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
            if not ERPExport.objects.filter(free, pk=export.pk, status=ERPExport.Status.PENDING).update(
                    claim_token=token, claimed_until=lease_until(now)):
                counts.refused[lifecycle.refusal(lifecycle.Result(export.pk, Outcome.CLAIMED))] += 1
                continue
            landed = _landed(export)
            if landed:
                note = " (found in the dropzone while cancelling: it was delivered, not cancelled)"
                result = lifecycle.transition(Verb.DELIVERED, [lifecycle.delivered(export, note=note)],
                                              token=token, actor=actor)[0]
                counts.refused["it had reached the dropzone already (now marked Sent)" if result.ok
                               else lifecycle.refusal(result)] += 1
                continue
            if landed is None:
                note = " (the dropzone could not be checked for a file of an interrupted attempt)"
        change = Change(export.pk, fields={"next_attempt_at": None, "last_error": f"cancelled: {why}",
                                           "claim_token": None, "claimed_until": None},
                        message=f"{actor} cancelled {export}: {why}{note}", details={"reason": why})
        counts.tally(lifecycle.transition(Verb.CANCEL, [change], token=token, actor=actor))
    return counts


def record_answer(*, export: ERPExport, actor: str, accepted: bool, reason: str,
                  erp_order_number: str = "") -> lifecycle.Result:
    """The ERP answered outside the dropzone (phone, mail, its portal): record it as if a file had come."""
    why = _reason(reason)
    body = {"source": "recorded by staff", "recorded_by": actor, "reason": why}
    if accepted:
        number = erp_order_number.strip()
        if not number or len(number) > ERP_ORDER_NUMBER_MAX or any(ord(c) < 32 for c in number):
            raise OverrideError(f"Enter the ERP's order number (1 to {ERP_ORDER_NUMBER_MAX} printable characters).")
        change = lifecycle.answered(export.pk, body={**body, "erp_order_number": number}, erp_order_number=number,
                                    message=f"{actor} recorded the ERP's confirmation of {export} as {number}: {why}",
                                    details={"reason": why})
        verb = Verb.MANUAL_ACCEPT
    else:
        change = lifecycle.answered(export.pk, body=body, errors=[{"code": "RECORDED_BY_STAFF", "message": why}],
                                    message=f"{actor} recorded the ERP's rejection of {export}: {why}",
                                    details={"reason": why})
        verb = Verb.MANUAL_REJECT
    return lifecycle.transition(verb, [change], actor=actor)[0]

