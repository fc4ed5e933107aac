"""The two every-minute django-q2 schedules: created by ``migrate``, never duplicated, and they do their job.

The tasks run in django-q2's sync mode here (the ``sync_tasks`` fixture); the
real cluster is covered by test_qcluster.py.  The last test drives django-q2's
own ``scheduler()`` so the path "schedule row -> task -> service" is the one a
cluster takes, including its cluster-name filter on schedules.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.conf import settings as django_settings
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule, Task
from django_q.scheduler import scheduler
from django_q.tasks import async_task
from pytest_django import Settings

from connectors.models import ERPConnection, ERPExport
from connectors.work.schedules import SCHEDULES, ensure_schedules
from orderflow.models import DraftOrder, Organization
from tests.fixtures.dropzones import names

DELIVER = "orderflow: deliver due exports"
POLL = "orderflow: poll ERP acks"
PRUNE = "orderflow: prune connector events"
ALERTS = "orderflow: connection alerts"


def assert_schedules_exactly_once() -> None:
    assert SCHEDULES == {DELIVER: ("connectors.tasks.deliver_all_due", 1),
                         POLL: ("connectors.tasks.poll_all_due", 1),
                         PRUNE: ("connectors.tasks.prune_events", 24 * 60),
                         ALERTS: ("connectors.tasks.run_alerts", 1)}
    ours = Schedule.objects.filter(func__startswith="connectors.")
    assert sorted(ours.values_list("name", flat=True)) == sorted(SCHEDULES)  # each name exactly once
    for name, (func, minutes) in SCHEDULES.items():
        schedule = Schedule.objects.get(name=name)
        assert (schedule.func, schedule.schedule_type, schedule.minutes, schedule.repeats) == (
            func, Schedule.MINUTES, minutes, -1)


def pending_export(draft: DraftOrder, connection: ERPConnection | None, *, due_in: timedelta) -> ERPExport:
    """A PENDING export as the approval leaves it, but without the enqueue (as if that task was lost)."""
    DraftOrder.objects.filter(pk=draft.pk).update(status=DraftOrder.Status.APPROVED)
    return ERPExport.objects.create(draft=draft, connection=connection, next_attempt_at=timezone.now() + due_in)


def sent_export_with_ack(draft: DraftOrder, connection: ERPConnection) -> tuple[ERPExport, Path]:
    """A SENT export and the ERP's accepting ack in the connection's ack dir."""
    export = ERPExport.objects.create(draft=draft, connection=connection, status=ERPExport.Status.SENT,
                                      sent_at=timezone.now())
    export.filename = f"20261126T120501Z_{draft.organization.slug}_{draft.order_number}_{str(export.id)[:8]}.json"
    export.save()
    DraftOrder.objects.filter(pk=draft.pk).update(status=DraftOrder.Status.PUSHED, erp_order_id=export.filename)
    ack_dir = Path(django_settings.LOCAL_DROPZONE_ROOT) / connection.ack_path.lstrip("/")  # the test's jail
    ack = ack_dir / f"ack_{export.filename.removesuffix('.json')}.json"
    ack.write_text(json.dumps({"export_id": str(export.id), "status": "accepted",
                               "erp_order_number": f"SO-{draft.order_number}"}))
    old = time.time() - 3600
    os.utime(ack, (old, old))
    return export, ack


def run_schedule(name: str) -> Task:
    """Run one schedule's task the way a cluster would enqueue it (inline: sync mode); return its result row."""
    task_id = async_task(Schedule.objects.get(name=name).func)
    task = Task.objects.get(id=task_id)
    assert task.success, task.result
    return task


def test_migrate_created_both_schedules_once(db: None) -> None:
    assert_schedules_exactly_once()


def test_ensure_schedules_never_duplicates_and_repairs(db: None) -> None:
    ensure_schedules()
    ensure_schedules()
    assert_schedules_exactly_once()
    # Someone edited a schedule in the admin: the next migrate puts it back (same row, not a new one).
    deliver_pk = Schedule.objects.get(name=DELIVER).pk
    Schedule.objects.filter(name=DELIVER).update(func="connectors.tasks.nothing", minutes=15, repeats=0)
    call_command("migrate", verbosity=0)  # post_migrate -> ensure_schedules, as on every deploy
    assert_schedules_exactly_once()
    assert Schedule.objects.get(name=DELIVER).pk == deliver_pk


def test_deliver_all_due_delivers_due_and_waiting_exports(
    db: None, sync_tasks: None, make_draft: Callable[..., DraftOrder], local_connection: ERPConnection,
    local_dropzone: Path, django_capture_on_commit_callbacks: Callable, settings: Settings, tmp_path: Path,
) -> None:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    due = pending_export(make_draft(order_number="PO-DUE"), local_connection, due_in=timedelta(seconds=-1))
    later = pending_export(make_draft(order_number="PO-LATER"), local_connection, due_in=timedelta(minutes=5))
    # Approved while the organization had no active connection; the schedule attaches it.
    waiting = pending_export(make_draft(order_number="PO-WAITING"), None, due_in=timedelta(seconds=-1))

    with django_capture_on_commit_callbacks(execute=True):  # deliveries are enqueued on commit
        task = run_schedule(DELIVER)

    assert task.result == "delivery enqueued for 1 connection(s)"
    for export in (due, later, waiting):
        export.refresh_from_db()
    assert due.status == waiting.status == ERPExport.Status.SENT
    assert waiting.connection_id == local_connection.pk
    assert later.status == ERPExport.Status.PENDING and later.attempts == 0  # its back-off is respected
    assert names(local_dropzone / "inbound") == sorted([due.filename, waiting.filename])
    assert DraftOrder.objects.get(order_number="PO-DUE").status == DraftOrder.Status.PUSHED
    # Attaching the waiting export enqueued a delivery too; the second run finds nothing left (claims).
    deliveries = Task.objects.filter(func="connectors.tasks.deliver_connection")
    assert deliveries.exists() and all(t.success for t in deliveries)
    assert any(t.result.endswith(": 2 sent, 0 to retry, 0 failed") for t in deliveries), list(deliveries)


def test_poll_all_due_polls_only_due_connections(
    db: None, sync_tasks: None, make_draft: Callable[..., DraftOrder], local_connection: ERPConnection,
    make_connection: Callable[..., ERPConnection], tmp_path: Path, django_capture_on_commit_callbacks: Callable,
) -> None:
    other_org = Organization.objects.create(slug="globex", name="Globex")
    (tmp_path / "globex").mkdir()
    polled_recently = make_connection(organization=other_org, ack_path="/globex",
                                      min_ack_age_seconds=0)
    ERPConnection.objects.filter(pk=polled_recently.pk).update(next_poll_at=timezone.now() + timedelta(seconds=40))
    due_export, due_ack = sent_export_with_ack(make_draft(order_number="PO-1"), local_connection)
    idle_export, idle_ack = sent_export_with_ack(make_draft(organization=other_org, order_number="PO-2"),
                                                 polled_recently)

    with django_capture_on_commit_callbacks(execute=True):  # polls are enqueued once a transaction commits
        task = run_schedule(POLL)

    assert task.result == "poll enqueued for 1 connection(s)"
    due_export.refresh_from_db()
    idle_export.refresh_from_db()
    assert due_export.status == ERPExport.Status.ACKED and not due_ack.exists()
    assert DraftOrder.objects.get(order_number="PO-1").status == DraftOrder.Status.CONFIRMED
    assert idle_export.status == ERPExport.Status.SENT and idle_ack.exists()  # its interval has not passed
    local_connection.refresh_from_db()
    assert local_connection.last_poll_ok and local_connection.next_poll_at > timezone.now() + timedelta(seconds=50)
    polls = Task.objects.filter(func="connectors.tasks.poll_connection")
    assert [t.args for t in polls] == [(local_connection.pk,)] and "1 accepted" in polls[0].result


def test_django_q_scheduler_runs_both_schedules(
    db: None, sync_tasks: None, make_draft: Callable[..., DraftOrder], local_connection: ERPConnection,
    local_dropzone: Path, django_capture_on_commit_callbacks: Callable, settings: Settings, tmp_path: Path,
) -> None:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    to_deliver = pending_export(make_draft(order_number="PO-NEW"), local_connection, due_in=timedelta(seconds=-1))
    answered, ack = sent_export_with_ack(make_draft(order_number="PO-OLD"), local_connection)
    Schedule.objects.update(next_run=timezone.now() - timedelta(seconds=1))  # both due now

    with django_capture_on_commit_callbacks(execute=True):
        scheduler()  # what the cluster's guard loop calls (about every 30 s)

    to_deliver.refresh_from_db()
    answered.refresh_from_db()
    assert to_deliver.status == ERPExport.Status.SENT and names(local_dropzone / "inbound") == [to_deliver.filename]
    assert answered.status == ERPExport.Status.ACKED and not ack.exists()
    assert DraftOrder.objects.get(order_number="PO-OLD").status == DraftOrder.Status.CONFIRMED
    for name in SCHEDULES:  # each fired once, and stays a repeating schedule
        schedule = Schedule.objects.get(name=name)
        assert schedule.repeats == -1 and schedule.next_run > timezone.now()
        assert Task.objects.get(id=schedule.task).success
    assert_schedules_exactly_once()
