"""Push: approved drafts become exports on their organization's active connection.

The chain is admin action → ``push_drafts`` → ``lifecycle.push`` (drafts
APPROVED and their exports in one transaction) → ``on_commit`` → django-q2
task → ``delivery.deliver_due_exports``.  Nothing is lost when the
organization has no active connection: the export waits without one and is
attached when an admin activates a connection.  New exports only ever go to
the active connection; a replaced connection keeps only the exports it
already tried to deliver (their file may be in its dropzone).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from orderflow.models import DraftOrder

from ..models import ERPConnection, ERPExport
from ..services import lifecycle
from ..services.events import record_event
from ..work.wake import deliver_soon


def push_drafts(*, drafts: Iterable[DraftOrder], actor: str = "") -> lifecycle.PushCounts:
    """Admin "Push to ERP": New, Push failed and Rejected drafts with lines get a new export."""
    counts = lifecycle.push(draft_ids=[d.pk for d in drafts], actor=actor)
    deliver_soon(counts.connection_ids)
    return counts


def _movable() -> Q:
    """Exports no connection has tried yet: waiting for one, or held by an inactive one."""
    untried = Q(connection__is_active=False, attempts=0, sent_at__isnull=True)
    return Q(status=ERPExport.Status.PENDING) & (Q(connection__isnull=True) | untried)


@transaction.atomic
def attach_waiting_exports(*, connection: ERPConnection) -> int:
    """Give the organization's untried PENDING exports to this (active) connection; they are due at once."""
    if not connection.is_active:
        return 0
    ids = list(ERPExport.objects.filter(_movable(), draft__organization_id=connection.organization_id)
               .values_list("pk", flat=True))
    if not ids:
        return 0
    # Re-checked on the row itself (no join), so a racing delivery's claim is never overridden.
    attached = ERPExport.objects.filter(pk__in=ids, status=ERPExport.Status.PENDING, attempts=0).update(
        connection=connection, next_attempt_at=timezone.now())
    if attached:
        record_event(kind="exports_attached", connection=connection,
                     message=f"{attached} waiting export(s) attached to {connection.name}")
        deliver_soon([connection.pk])
    return attached


def organizations_with_waiting_exports() -> set[int]:
    return set(ERPExport.objects.filter(_movable()).values_list("draft__organization_id", flat=True).distinct())
