"""What `make run` sets up: demo data, an admin whose printed password works, and the demo's simulated ERP."""

from __future__ import annotations

import re
import shutil
import signal
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_q.models import Schedule

from connectors import demo
from connectors.demo import run_demo_erp
from connectors.demo_tasks import RUN_SECONDS, answer_demo_exports
from connectors.models import ERPConnection, ERPExport
from connectors.outbound import pushing
from connectors.simulator import erp_order_number
from connectors.work.schedules import DEMO_SCHEDULE, DEMO_TASK, ensure_schedules
from connectors.work.stop import stop_requested
from orderflow.models import DraftOrder
from tests.fixtures.pipeline import FakeClock


def test_demo_loads_once_and_printed_password_logs_in(db, settings, tmp_path) -> None:
    settings.LOCAL_DROPZONE_ROOT = tmp_path
    call_command("load_demo", stdout=StringIO())
    call_command("load_demo", stdout=StringIO())  # rerun: nothing duplicated
    assert DraftOrder.objects.filter(organization__slug="demo").count() == 3
    conn = ERPConnection.objects.get(organization__slug="demo")
    assert conn.is_active and conn.transport == "local" and (tmp_path / "demo" / "inbound").is_dir()

    out = StringIO()
    call_command("create_demo_admin", stdout=out)
    password = re.search(r"password: (\S+)", out.getvalue()).group(1)
    client = Client()
    response = client.post("/admin/login/", {"username": "admin", "password": password, "next": "/admin/"},
                           follow=True)
    assert response.status_code == 200 and "Draft orders" in response.content.decode()
    again = StringIO()
    call_command("create_demo_admin", stdout=again)
    assert "exists" in again.getvalue() and password not in again.getvalue()


# --- the demo's simulated ERP (a demo-only django-q2 schedule) ---




@pytest.fixture
def demo_connection(db: None) -> ERPConnection:
    call_command("load_demo", stdout=StringIO())
    return ERPConnection.objects.get(organization__slug="demo")


def demo_schedule() -> Schedule:
    return Schedule.objects.get(name=DEMO_SCHEDULE)


def push_and_deliver(order_number: str, capture: Callable) -> ERPExport:
    """Push a demo draft as the admin action does; its delivery task runs inline (sync_tasks)."""
    with capture(execute=True):
        counts = pushing.push_drafts(drafts=DraftOrder.objects.filter(order_number=order_number))
    assert counts.done == 1
    export = ERPExport.objects.get(draft__order_number=order_number)
    assert export.status == ERPExport.Status.SENT, export.last_error
    return export


def test_load_demo_schedules_the_simulated_erp_once_and_repairs_it(demo_connection: ERPConnection) -> None:
    schedule = demo_schedule()
    assert (schedule.func, schedule.args, schedule.schedule_type, schedule.minutes, schedule.repeats) == (
        DEMO_TASK, f"({demo_connection.pk},)", Schedule.MINUTES, 1, -1)
    Schedule.objects.filter(pk=schedule.pk).update(func="connectors.tasks.nothing", args="(999,)", repeats=0)
    out = StringIO()
    call_command("load_demo", stdout=out)  # what every `make run` does
    assert "Demo data already present." in out.getvalue()
    assert Schedule.objects.filter(name=DEMO_SCHEDULE).count() == 1
    repaired = demo_schedule()
    assert repaired.pk == schedule.pk and (repaired.func, repaired.args, repaired.repeats) == (
        DEMO_TASK, f"({demo_connection.pk},)", -1)


def test_migrate_alone_never_schedules_the_simulated_erp(db: None) -> None:
    ensure_schedules()  # what every migrate (every deploy) runs
    assert not Schedule.objects.filter(name=DEMO_SCHEDULE).exists()
    assert not Schedule.objects.filter(func__startswith="connectors.demo").exists()


def test_the_demo_erp_answers_a_pushed_draft_and_it_is_confirmed(
    demo_connection: ERPConnection, sync_tasks: None, clock: FakeClock, tmp_path: Path,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    export = push_and_deliver("PO-2026-0042", django_capture_on_commit_callbacks)
    inbound, outbound = tmp_path / "demo" / "inbound", tmp_path / "demo" / "outbound"
    assert sorted(p.name for p in inbound.iterdir()) == [export.filename]

    # One pass (no time to loop): the file is answered and the connection polled at once, not a minute later.
    result = answer_demo_exports(demo_connection.pk, seconds=0, interval=0)

    assert result == "demo ERP: 1 pass(es), 1 accepted, 0 rejected, 0 invalid, 1 poll(s)"
    export.refresh_from_db()
    assert export.status == ERPExport.Status.ACKED and export.erp_order_number == erp_order_number(str(export.id))
    draft = DraftOrder.objects.get(order_number="PO-2026-0042")
    assert draft.status == DraftOrder.Status.CONFIRMED and draft.erp_order_id == export.erp_order_number
    assert not list(inbound.iterdir())  # consumed by the simulated ERP
    assert [p.name for p in (outbound / "processed").iterdir()] == [f"ack_{export.filename}"]


def test_the_demo_erp_polls_only_when_the_connection_is_due(
    demo_connection: ERPConnection, sync_tasks: None, clock: FakeClock,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    ERPConnection.objects.filter(pk=demo_connection.pk).update(next_poll_at=timezone.now() + timedelta(seconds=30))
    export = push_and_deliver("PO-2026-0043", django_capture_on_commit_callbacks)
    demo_connection.refresh_from_db()

    report = run_demo_erp(connection=demo_connection, seconds=0, interval=0, clock=clock, sleep=clock.sleep)

    assert (report.outcomes["accepted"], report.polls) == (1, 0)  # answered; the poll interval is respected
    export.refresh_from_db()
    assert export.status == ERPExport.Status.SENT
    ERPConnection.objects.filter(pk=demo_connection.pk).update(next_poll_at=None)  # the interval has passed
    report = run_demo_erp(connection=demo_connection, seconds=4, interval=2, clock=clock, sleep=clock.sleep)
    assert report.polls == 0  # nothing answered in this run: polling stays the schedule's job
    assert report.passes == 2  # at 0 and 2 s by its clock; at 4 s its time is up


def test_a_run_ends_soon_after_a_stop_request(demo_connection: ERPConnection, clock: FakeClock) -> None:
    started = clock.now
    report = run_demo_erp(connection=demo_connection, seconds=45, interval=2,
                          should_stop=lambda: clock.now >= started + 1,  # asked 1 s into the first pause
                          clock=clock, sleep=clock.sleep)
    assert report.stopped and report.passes == 1 and str(report).endswith("; stopped early")
    assert clock.now - started <= 1.25  # within one sleep slice, not at the next pass


def test_ctrl_c_ends_the_run_instead_of_being_ignored() -> None:
    """A cluster worker ignores SIGINT; while the demo run lasts, SIGINT only asks it to finish."""
    before = signal.getsignal(signal.SIGINT)
    with stop_requested() as stopping:
        assert not stopping()
        signal.raise_signal(signal.SIGINT)  # no KeyboardInterrupt
        assert stopping()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_run_stays_well_inside_the_task_timeout(demo_connection: ERPConnection, settings,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    runs = []
    monkeypatch.setattr(demo, "run_demo_erp", lambda **kwargs: runs.append(kwargs) or "ran")
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 30}
    assert answer_demo_exports(demo_connection.pk) == "ran"
    assert runs[0]["seconds"] == 15  # half of Q_TIMEOUT when that is below the usual 45 s
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 300}
    answer_demo_exports(demo_connection.pk)
    assert runs[1]["seconds"] == RUN_SECONDS < 60  # and over before the schedule fires again


@pytest.mark.parametrize("change", ["deleted", "repointed"])
def test_the_schedule_goes_when_the_demo_connection_does(demo_connection: ERPConnection, tmp_path: Path,
                                                         change: str) -> None:
    stray = tmp_path / "demo" / "inbound" / "20261126T120501Z_demo_PO-1_0123abcd.json"
    stray.write_text("{}")
    if change == "deleted":
        demo_connection.delete()
    else:  # now a real ERP's dropzone: its files are that ERP's to import, not the simulator's to answer
        ERPConnection.objects.filter(pk=demo_connection.pk).update(transport="sftp", host="erp.example.com")

    result = answer_demo_exports(demo_connection.pk)

    assert result.endswith("nothing answered; demo schedule removed"), result
    assert not Schedule.objects.filter(name=DEMO_SCHEDULE).exists()
    assert stray.exists() and not list((tmp_path / "demo" / "outbound").glob("*.json"))
    call_command("load_demo", stdout=StringIO())  # the next `make run`
    assert Schedule.objects.filter(name=DEMO_SCHEDULE).exists() == (change == "deleted")


def test_a_dropzone_fault_that_cannot_heal_ends_the_run_with_the_reason(demo_connection: ERPConnection,
                                                                       tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "demo" / "inbound")  # someone cleaned up var/dropzone

    result = answer_demo_exports(demo_connection.pk, seconds=30, interval=2)

    assert result.startswith("demo ERP: 1 pass(es), 0 accepted") and "; pass 1: " in result, result
    assert Schedule.objects.filter(name=DEMO_SCHEDULE).exists()  # a fault, not a reason to unschedule
