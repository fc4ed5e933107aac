"""django-q2 entry points: short tasks that never talk to a partner (docs/work-model.md).

Polls and deliveries are the dropzone engine's (connectors/work/engine.py), not django-q2 tasks: a worker
slot never waits on a partner or a timer.  Any task may run twice or overlap with itself; each is safe so.
"""

from __future__ import annotations

from django.conf import settings

from .models import ERPConnection
from .outbound import pushing
from .services import alerts, events, lifecycle
from .work import wake


def sweep() -> str:
    """The every-minute schedule: finish pushes that committed halfway, give waiting exports to a connection
    activated meanwhile.  The engine then delivers them (it finds due exports by itself)."""
    recovered = 0
    for draft_id in lifecycle.approved_without_open_export():
        counts = lifecycle.approve_saved(draft_id=draft_id)
        recovered += counts.done
        wake.deliver_soon(counts.connection_ids)
    attached = 0
    waiting = pushing.organizations_with_waiting_exports()
    for connection in ERPConnection.objects.filter(is_active=True, organization_id__in=waiting):
        attached += pushing.attach_waiting_exports(connection=connection)
    return f"{recovered} approval(s) recovered, {attached} waiting export(s) attached"


def prune_events() -> str:
    """The daily schedule: the event timeline keeps EVENT_RETENTION_DAYS."""
    deleted = events.prune_events(older_than_days=settings.EVENT_RETENTION_DAYS)
    return f"{deleted} event(s) older than {settings.EVENT_RETENTION_DAYS} days deleted"


def run_alerts() -> str:
    """The every-minute schedule: mail once when a connection's problem starts and once when it ends."""
    return alerts.run_alerts()
