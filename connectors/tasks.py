"""django-q2 entry points: take ids, call a service, return a short summary.

Any task may run twice or overlap with itself; the services claim their rows,
so that is safe.
"""

from __future__ import annotations

from django.conf import settings

from .inbound import polling
from .models import ERPConnection
from .outbound import delivery, pushing
from .services import alerts, events, lifecycle
from .work import wake
from .work.stop import stop_requested, task_budget


def deliver_connection(connection_id: int) -> str:
    connection = ERPConnection.objects.filter(pk=connection_id).first()
    if connection is None:
        return f"connection {connection_id} no longer exists"
    # Drains what is due, within the minute schedule (each run claims its exports; clusters share them).
    with stop_requested() as stopping:  # Ctrl-C: the run in progress ends, no other starts
        reports = list(delivery.delivery_runs(connection=connection, budget=task_budget(delivery.TASK_SECONDS),
                                              should_stop=stopping))
    return "; ".join(map(str, reports)) or f"{connection}: nothing due"


def deliver_all_due() -> str:
    """The every-minute schedule: recover half-done pushes, attach waiting exports, enqueue deliveries."""
    for draft_id in lifecycle.approved_without_open_export():
        lifecycle.approve_saved(draft_id=draft_id)  # its connection is enqueued with every due one below
    waiting = pushing.organizations_with_waiting_exports()
    for connection in ERPConnection.objects.filter(is_active=True, organization_id__in=waiting):
        pushing.attach_waiting_exports(connection=connection, enqueue=False)  # enqueued just below
    ready = list(delivery.due_exports().order_by().values_list("connection_id", flat=True).distinct())
    for connection_id in ready:
        wake.enqueue_delivery(connection_id)
    return f"delivery enqueued for {len(ready)} connection(s)"


def poll_connection(connection_id: int, force: bool = False) -> str:
    connection = ERPConnection.objects.filter(pk=connection_id).first()
    if connection is None:
        return f"connection {connection_id} no longer exists"
    with stop_requested() as stopping:  # Ctrl-C: ends at its next pause
        reports = polling.poll_until_next_schedule(connection=connection, force=force,
                                                   budget=task_budget(polling.POLL_TASK_SECONDS), should_stop=stopping)
    return "; ".join(map(str, reports)) if reports else f"{connection}: not due, or polled by another worker"


def poll_all_due() -> str:
    """The every-minute schedule: one poll task per connection due (draining ones too) or kept by poll tasks."""
    due = list(polling.connections_to_poll().values_list("pk", flat=True))
    for connection_id in due:
        wake.enqueue_poll(connection_id)
    return f"poll enqueued for {len(due)} connection(s)"


def prune_events() -> str:
    """The daily schedule: the event timeline keeps EVENT_RETENTION_DAYS."""
    deleted = events.prune_events(older_than_days=settings.EVENT_RETENTION_DAYS)
    return f"{deleted} event(s) older than {settings.EVENT_RETENTION_DAYS} days deleted"


def run_alerts() -> str:
    """The every-minute schedule: mail once when a connection's problem starts and once when it ends."""
    return alerts.run_alerts()
