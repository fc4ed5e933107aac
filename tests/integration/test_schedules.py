"""The django-q2 schedules: created by ``migrate``, never duplicated, short, and they do their job.

Polls and deliveries are not schedules (the engine finds due work: tests/work/test_engine.py).  The tasks
run in django-q2's sync mode here (the ``sync_tasks`` fixture); the real cluster is covered by
test_qcluster.py.  The last test drives django-q2's own ``scheduler()`` so the path "schedule row -> task
-> service" is the one a cluster takes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule, Task
from django_q.scheduler import scheduler
from django_q.tasks import async_task

from connectors.models import ERPConnection, ERPExport
from connectors.work.schedules import SCHEDULES, ensure_schedules
from orderflow.models import DraftOrder
from tests.fixtures.dropzones import names

SWEEP = "orderflow: sweep unfinished pushes"
PRUNE = "orderflow: prune connector events"
ALERTS = "orderflow: connection alerts"


def assert_schedules_exactly_once() -> None:
    assert SCHEDULES == {SWEEP: ("connectors.tasks.sweep", 1),
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


def run_schedule(name: str) -> Task:
    """Run one schedule's task the way a cluster would enqueue it (inline: sync mode); return its result row."""
    task_id = async_task(Schedule.objects.get(name=name).func)
    task = Task.objects.get(id=task_id)
    assert task.success, task.result
    return task


def test_migrate_created_the_schedules_once(db: None) -> None:
    assert_schedules_exactly_once()


def test_ensure_schedules_never_duplicates_and_repairs(db: None) -> None:
    ensure_schedules()
    ensure_schedules()
    assert_schedules_exactly_once()
    # Someone edited a schedule in the admin: the next migrate puts it back (same row, not a new one).
    sweep_pk = Schedule.objects.get(name=SWEEP).pk
    Schedule.objects.filter(name=SWEEP).update(func="connectors.tasks.nothing", minutes=15, repeats=0)
    call_command("migrate", verbosity=0)  # post_migrate -> ensure_schedules, as on every deploy
    assert_schedules_exactly_once()
    assert Schedule.objects.get(name=SWEEP).pk == sweep_pk


def test_migrate_removes_the_poll_and_delivery_schedules_of_earlier_versions(db: None) -> None:
    """They ran polls and deliveries as worker tasks (a slot waiting on partners): the engine does it now."""
    for name, func in (("orderflow: deliver due exports", "connectors.tasks.deliver_all_due"),
                       ("orderflow: poll ERP acks", "connectors.tasks.poll_all_due")):
        Schedule.objects.create(name=name, func=func, schedule_type=Schedule.MINUTES, minutes=1, repeats=-1)
    call_command("migrate", verbosity=0)
    assert_schedules_exactly_once()


def test_the_sweep_recovers_half_done_pushes_and_attaches_waiting_exports(
    db: None, sync_tasks: None, make_draft: Callable[..., DraftOrder], local_connection: ERPConnection,
    local_dropzone: Path, django_capture_on_commit_callbacks: Callable,
) -> None:
    # Approved by another app with a queryset update (no export yet), and approved while the organization had
    # no active connection (an export waiting for one): the sweep finishes both; their delivery follows.
    DraftOrder.objects.filter(pk=make_draft(order_number="PO-HALF").pk).update(status=DraftOrder.Status.APPROVED)
    waiting = pending_export(make_draft(order_number="PO-WAITING"), None, due_in=timedelta(seconds=-1))

    with django_capture_on_commit_callbacks(execute=True):  # under sync mode the delivery runs on commit
        task = run_schedule(SWEEP)

    assert task.result == "1 approval(s) recovered, 1 waiting export(s) attached"
    waiting.refresh_from_db()
    half = ERPExport.objects.get(draft__order_number="PO-HALF")
    assert waiting.connection_id == half.connection_id == local_connection.pk
    assert waiting.status == half.status == ERPExport.Status.SENT
    assert names(local_dropzone / "inbound") == sorted([half.filename, waiting.filename])


def test_django_q_scheduler_runs_the_schedules(
    db: None, sync_tasks: None, make_draft: Callable[..., DraftOrder], local_connection: ERPConnection,
    local_dropzone: Path, django_capture_on_commit_callbacks: Callable,
) -> None:
    DraftOrder.objects.filter(pk=make_draft(order_number="PO-HALF").pk).update(status=DraftOrder.Status.APPROVED)
    Schedule.objects.update(next_run=timezone.now() - timedelta(seconds=1))  # all due now

    with django_capture_on_commit_callbacks(execute=True):
        scheduler()  # what the cluster's guard loop calls (about every 30 s)

    export = ERPExport.objects.get(draft__order_number="PO-HALF")
    assert export.status == ERPExport.Status.SENT and names(local_dropzone / "inbound") == [export.filename]
    for name in SCHEDULES:  # each fired once, and stays a repeating schedule
        schedule = Schedule.objects.get(name=name)
        assert schedule.repeats == -1 and schedule.next_run > timezone.now()
        assert Task.objects.get(id=schedule.task).success
    assert_schedules_exactly_once()
