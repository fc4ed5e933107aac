"""The admin home page's connection health panel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.urls import reverse
from django.utils import timezone

from orderflow.scoping import scope

from ..models import ERPConnection
from ..services.health import health_of
from ..work.engine import running_engines
from ..work.queue import waiting

register = template.Library()


@register.filter
def age(moment: datetime | None) -> str:
    """How long ago, in the unit an operator reads at a glance: "12 s", "3 min", "2 h", "5 days"."""
    if moment is None:
        return ""
    seconds = max(int((timezone.now() - moment).total_seconds()), 0)
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size if unit == "days" else seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@register.inclusion_tag("admin/connectors/health.html", takes_context=True)
def connection_health(context: dict[str, Any]) -> dict[str, Any]:
    request = context["request"]
    if not request.user.has_perm("connectors.view_erpconnection"):
        return {"rows": []}
    connections = scope(ERPConnection.objects.select_related("organization"), request.user)
    exports = reverse("admin:connectors_erpexport_changelist")
    rows = []
    for h in health_of(connections.order_by("organization__name", "name")):
        base = f"{exports}?connection__id__exact={h.connection.pk}"
        rows.append({
            "health": h,
            "change_url": reverse("admin:connectors_erpconnection_change", args=[h.connection.pk]),
            "counts": [
                ("pending", h.pending, f"{base}&status__exact=PENDING"),
                ("awaiting ack", h.awaiting, f"{base}&status__exact=SENT"),
                ("overdue", h.overdue, f"{base}&ack=overdue"),
                ("failed", h.failed, f"{base}&status__exact=FAILED"),
            ],
        })
    return {"rows": rows, "waiting": waiting([row["health"].connection.pk for row in rows]),
            "engines": running_engines()}
