"""Push: an approved draft becomes a PENDING export, delivered after commit.

The chain is admin action → ``push_drafts`` (status → APPROVED) → post_save
signal → ``create_export_for_approved_draft`` → ``on_commit`` → django-q2 task
→ ``delivery.deliver_due_exports``.  Nothing is lost when the organization has
no active connection: the export waits without one and is attached when an
admin activates a connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from orderflow.models import DraftOrder

from ..models import ConnectorEvent, ERPConnection, ERPExport
from .events import record_event

DELIVER_TASK = "connectors.tasks.deliver_connection"


@dataclass
class Counts:
    done: int = 0
    skipped: int = 0


def enqueue_delivery(connection_id: int) -> None:
    """Ask a worker to deliver this connection's due exports, once the current transaction commits."""

    def send() -> None:
        from django_q.tasks import async_task

        async_task(DELIVER_TASK, connection_id, task_name=f"deliver connection {connection_id}")

    transaction.on_commit(send)


def active_connection(organization_id: int) -> ERPConnection | None:
    return ERPConnection.objects.filter(organization_id=organization_id, is_active=True).first()


@transaction.atomic
def create_export_for_approved_draft(*, draft: DraftOrder) -> ERPExport | None:
    """Called when a draft *changes into* APPROVED; idempotent (one open export per draft)."""
    DraftOrder.objects.select_for_update().filter(pk=draft.pk).first()  # serialise concurrent approvals
    if draft.exports.filter(status=ERPExport.Status.PENDING).exists():
        return None
    connection = active_connection(draft.organization_id)
    export = ERPExport.objects.create(draft=draft, connection=connection, next_attempt_at=timezone.now())
    if connection is None:
        record_event(kind="export_waiting", export=export, level=ConnectorEvent.Level.WARNING,
                     message=f"{draft.order_number}: no active ERP connection for {draft.organization}; "
                             "the export waits until one is activated")
    else:
        record_event(kind="export_created", export=export, connection=connection,
                     message=f"{draft.order_number} approved; export {str(export.id)[:8]} queued")
        enqueue_delivery(connection.pk)
    return export


def push_drafts(*, drafts: Iterable[DraftOrder]) -> Counts:
    """Admin "Push to ERP": NEW, PUSH_FAILED and REJECTED drafts become APPROVED (which pushes them)."""
    counts = Counts()
    for draft in drafts:
        if draft.status not in DraftOrder.PUSHABLE or not draft.lines.exists():
            counts.skipped += 1
            continue
        draft.status = DraftOrder.Status.APPROVED
        draft.save(update_fields=["status", "updated_at"])
        counts.done += 1
    return counts


@transaction.atomic
def attach_waiting_exports(*, connection: ERPConnection, enqueue: bool = True) -> int:
    """Give the organization's connection-less PENDING exports to this (active) connection.

    ``enqueue=False`` for callers that enqueue every due connection themselves (the schedule).
    """
    if not connection.is_active:
        return 0
    attached = ERPExport.objects.filter(
        connection__isnull=True, status=ERPExport.Status.PENDING, draft__organization_id=connection.organization_id
    ).update(connection=connection, next_attempt_at=timezone.now())
    if attached:
        record_event(kind="exports_attached", connection=connection,
                     message=f"{attached} waiting export(s) attached to {connection.name}")
        if enqueue:
            enqueue_delivery(connection.pk)
    return attached


@transaction.atomic
def retry_exports(*, exports: Iterable[ERPExport]) -> Counts:
    """Admin "Retry delivery": the same export (same id and file name) goes out again.

    PENDING exports are made due now; FAILED exports that never reached the
    dropzone get a fresh retry budget.  Exports the ERP already answered
    (ACKED, or FAILED after SENT) are skipped: a new push is what they need.
    """
    counts = Counts()
    connections: set[int] = set()
    for export in exports:
        retriable = export.status == ERPExport.Status.PENDING or (
            export.status == ERPExport.Status.FAILED and export.sent_at is None
        )
        if not retriable or export.connection_id is None:
            counts.skipped += 1
            continue
        if export.status == ERPExport.Status.PENDING:
            # Keep any claim: a worker may be delivering it right now.
            ERPExport.objects.filter(pk=export.pk).update(next_attempt_at=timezone.now())
        else:
            ERPExport.objects.filter(pk=export.pk, status=ERPExport.Status.FAILED).update(
                status=ERPExport.Status.PENDING, attempts=0, next_attempt_at=timezone.now(), last_error="",
            )
        # queryset.update: a direct write, so the approval signal does not make a second export.
        DraftOrder.objects.filter(pk=export.draft_id).update(status=DraftOrder.Status.APPROVED)
        record_event(kind="delivery_retry_requested", export=export, message=f"Retry of {export} requested")
        connections.add(export.connection_id)
        counts.done += 1
    for connection_id in connections:
        enqueue_delivery(connection_id)
    return counts
