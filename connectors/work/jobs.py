"""One job of one connection: a poll, or a delivery slice, within its budget (docs/work-model.md).

The engine runs these on its session threads with the claim it already won; an operator's command and
django-q2's sync mode (the tests) run them inline, and they claim the connection themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from django.conf import settings
from django.utils import timezone

from ..inbound import polling
from ..inbound.polling import PollReport
from ..models import ERPConnection
from ..outbound import delivery
from ..outbound.delivery import DeliveryReport
from .budget import Budget
from .claims import Kind, claim, release
from .sessions import Session


def default_budget() -> Budget:
    return Budget(settings.CONNECTOR_JOB_SECONDS)


def poll(connection_id: int, *, token: uuid.UUID | None = None, force: bool = False,
         session: Session | None = None, budget: Budget | None = None) -> PollReport | None:
    """Poll once (``force``: due or not).  None: the connection is gone, not due, or polled elsewhere right now."""
    connection = ERPConnection.objects.filter(pk=connection_id).first()
    if connection is None:
        if token is not None:
            release(Kind.POLL, connection_id, token)
        return None
    return polling.poll_connection(connection=connection, force=force, token=token, session=session,
                                   budget=budget or default_budget())


def deliver(connection_id: int, *, token: uuid.UUID | None = None, session: Session | None = None,
            budget: Budget | None = None) -> DeliveryReport | None:
    """One delivery slice.  None: the connection is gone, or another delivery of it is in flight."""
    if token is None:
        token, won = claim(Kind.DELIVERY, [connection_id], now=timezone.now())
        if not won:
            return None
    try:
        connection = ERPConnection.objects.filter(pk=connection_id, is_active=True).first()
        if connection is None:
            return None
        return delivery.deliver_due_exports(connection=connection, session=session,
                                            budget=budget or default_budget())
    finally:
        release(Kind.DELIVERY, connection_id, token)


def drain_deliveries(connection: ERPConnection) -> Iterator[DeliveryReport]:
    """Delivery slices one after the other over one login until nothing is due (an operator's command; the
    bench).  Exports that met a fault wait for their back-off, so this ends."""
    with Session(connection) as session:
        while (report := deliver(connection.pk, session=session)) is not None and report.handled:
            yield report


def drain_polls(connection: ERPConnection, *, limit: int = 1000) -> Iterator[PollReport]:
    """Polls (due or not) one after the other over one login while files are left (an operator's command; the
    bench): ends after a poll that failed, left nothing, or found the connection polled elsewhere."""
    with Session(connection) as session:
        for _ in range(limit):
            report = poll(connection.pk, force=True, session=session)
            if report is None:
                return
            yield report
            if report.error or not report.more:
                return
