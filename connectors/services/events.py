"""The event timeline: what happened, where an admin can read it."""

from __future__ import annotations

import logging
from typing import Any

from ..models import ConnectorEvent, ERPConnection, ERPExport

logger = logging.getLogger("connectors")

_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def record_event(
    *,
    kind: str,
    message: str,
    connection: ERPConnection | None = None,
    export: ERPExport | None = None,
    level: str = ConnectorEvent.Level.INFO,
    details: dict[str, Any] | None = None,
) -> ConnectorEvent:
    """Store one event and mirror it to the log (messages never carry secrets)."""
    if connection is None and export is not None:
        connection = export.connection
    logger.log(_LOG_LEVELS.get(level, logging.INFO), "%s: %s", kind, message)
    return ConnectorEvent.objects.create(
        connection=connection, export=export, kind=kind, level=level, message=message, details=details or {}
    )
