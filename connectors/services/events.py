"""The event timeline: what happened, where an admin can read it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.utils import timezone

from ..models import ConnectorEvent, ERPConnection, ERPExport
from .rowwrites import Statement, insert_statements, run_statements

logger = logging.getLogger("connectors")

_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dataclass(frozen=True)
class EventSpec:
    """One event to store, by ids, so a batch of them is one INSERT."""

    kind: str
    message: str
    export_id: UUID | None = None
    connection_id: int | None = None
    level: str = ConnectorEvent.Level.INFO
    actor: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def log_ids(kind: str, connection_id: int | None, export_id: UUID | None) -> dict[str, Any]:
    """What a JSON log line of the event carries besides its text (LOG_FORMAT=json)."""
    return {"event": kind, "connection_id": connection_id, "export_id": str(export_id) if export_id else None}


def event_statements(specs: Sequence[EventSpec]) -> list[Statement]:
    """The INSERT of these events, to run with other writes; mirrors them to the log (messages never carry
    secrets)."""
    for spec in specs:
        logger.log(_LOG_LEVELS.get(spec.level, logging.INFO), "%s: %s", spec.kind, spec.message,
                   extra=log_ids(spec.kind, spec.connection_id, spec.export_id))
    return insert_statements([
        ConnectorEvent(connection_id=s.connection_id, export_id=s.export_id, kind=s.kind, level=s.level,
                       actor=s.actor, message=s.message, details=s.details)
        for s in specs
    ])


def record_events(specs: Sequence[EventSpec]) -> None:
    """Store events in one INSERT and mirror them to the log."""
    run_statements(ConnectorEvent, event_statements(specs))


def record_event(
    *,
    kind: str,
    message: str,
    connection: ERPConnection | None = None,
    export: ERPExport | None = None,
    level: str = ConnectorEvent.Level.INFO,
    actor: str = "",
    details: dict[str, Any] | None = None,
) -> ConnectorEvent:
    """Store one event and mirror it to the log (messages never carry secrets)."""
    if connection is None and export is not None:
        connection = export.connection
    logger.log(_LOG_LEVELS.get(level, logging.INFO), "%s: %s", kind, message,
               extra=log_ids(kind, connection.pk if connection else None, export.pk if export else None))
    return ConnectorEvent.objects.create(
        connection=connection, export=export, kind=kind, level=level, actor=actor, message=message,
        details=details or {},
    )


def prune_events(*, older_than_days: int, batch: int = 5000, max_batches: int = 100) -> int:
    """Delete events older than ``older_than_days`` in bounded batches; returns how many went."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted = 0
    for _ in range(max_batches):  # bounded: a huge backlog is finished by the next day's run
        ids = list(ConnectorEvent.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            break
        deleted += ConnectorEvent.objects.filter(pk__in=ids).delete()[0]
    return deleted
