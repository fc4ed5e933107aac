"""Pieces every connector admin page shares."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.timezone import localtime

from orderflow import scoping
from orderflow.admin import status_badge

from ..models import ConnectorEvent, ERPConnection, ERPExport

# How each connector row reaches its organization, for the admin's organization scoping.
scoping.register(ERPConnection, "organization")
scoping.register(ERPExport, "draft__organization")


def _event_scope(orgs: QuerySet) -> Q:
    # An event names its connection, its export, or both.
    return Q(connection__organization__in=orgs) | Q(export__draft__organization__in=orgs)


scoping.register(ConnectorEvent, _event_scope)

# Colours staff can read at a glance (drafts use the same ones for the same meaning).
EXPORT_COLOURS = {
    "PENDING": "#0d6efd",
    "SENT": "#6f42c1",
    "ACKED": "#198754",
    "FAILED": "#dc3545",
    "REJECTED": "#fd7e14",
    "CANCELLED": "#6c757d",
}


def export_badge(status: str, label: str) -> str:
    return status_badge(status, label, EXPORT_COLOURS)


def actor(request: HttpRequest) -> str:
    """Who did it, as the event timeline records it."""
    return request.user.get_username()


class ReadOnlyAdminMixin:
    """Rows written by the pipeline: staff look, the pipeline writes."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def render_timeline(events: Iterable[ConnectorEvent]) -> str:
    """Events as a small table: when, who, what (the story of an export or a draft)."""
    rows = format_html_join(
        "", '<tr class="of-event of-event-{}"><td style="white-space:nowrap">{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td></tr>",
        ((e.level, localtime(e.created_at).strftime("%Y-%m-%d %H:%M:%S"),
          e.actor or ("the ERP" if e.kind.startswith("ack_") else "orderflow"),
          e.kind.replace("_", " "), e.message) for e in events),
    )
    if not rows:
        return "No events yet."
    return format_html('<table class="of-timeline"><thead><tr><th>When</th><th>Who</th><th>What</th><th>Detail</th>'
                       "</tr></thead><tbody>{}</tbody></table>", rows)
