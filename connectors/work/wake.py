"""How the rest of the code asks for a partner's work to happen soon (docs/work-model.md).

Nothing is sent anywhere: the engine finds due rows by itself within a tick (``CONNECTOR_TICK_SECONDS``),
in whichever process and on whichever machine has a free session thread.  These functions only make the
rows due.  Under django-q2's sync mode (``Conf.SYNC``: the tests, where no cluster runs) the job runs
inline instead, once the caller's transaction commits.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone
from django_q.conf import Conf

from ..models import ERPConnection, ERPExport
from . import jobs


def deliver_soon(connection_ids: Iterable[int]) -> None:
    """These connections have exports due (a push, an activation, a retry): the engine takes them at once."""
    ids = sorted(set(connection_ids))
    if ids and Conf.SYNC:
        transaction.on_commit(lambda: [jobs.deliver(connection_id) for connection_id in ids])


def deliver_now(connection_id: int) -> int:
    """Deliver the connection's PENDING exports now, those waiting for a retry too; how many are pending."""
    pending = ERPExport.objects.filter(connection_id=connection_id, status=ERPExport.Status.PENDING)
    count = pending.update(next_attempt_at=timezone.now())
    deliver_soon([connection_id] if count else [])
    return count


def poll_now(connection_id: int) -> None:
    """Poll this connection now, whatever its interval (the admin's "Poll now")."""
    ERPConnection.objects.filter(pk=connection_id).update(next_poll_at=timezone.now())
    if Conf.SYNC:
        transaction.on_commit(lambda: jobs.poll(connection_id, force=True))
