"""What `make run` sets up: demo data, an admin whose printed password works, and the demo's simulated ERP."""

from __future__ import annotations

import re
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from django_q.models import Schedule

from connectors.models import ERPConnection, ERPExport
from connectors.outbound import pushing
from connectors.simulator import erp_order_number
from connectors.work.engine import Engine
from connectors.work.schedules import SCHEDULES, ensure_schedules
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


# --- the demo's simulated ERP: `simulate_erp --demo`, a process of its own under `make run` ---


@pytest.fixture
def demo_connection(db: None) -> ERPConnection:
    call_command("load_demo", stdout=StringIO())
    return ERPConnection.objects.get(organization__slug="demo")


def push_and_deliver(order_number: str, capture: Callable) -> ERPExport:
    """Push a demo draft as the admin action does; its delivery runs inline (sync_tasks)."""
    with capture(execute=True):
        counts = pushing.push_drafts(drafts=DraftOrder.objects.filter(order_number=order_number))
    assert counts.done == 1
    export = ERPExport.objects.get(draft__order_number=order_number)
    assert export.status == ERPExport.Status.SENT, export.last_error
    return export


def simulate_demo(*args: str) -> str:
    out = StringIO()
    call_command("simulate_erp", "--demo", "--once", *args, stdout=out)
    return out.getvalue()


def test_the_demo_erp_answers_a_pushed_draft_and_the_engine_confirms_it(
    demo_connection: ERPConnection, sync_tasks: None, tmp_path: Path, django_capture_on_commit_callbacks: Callable,
    clock: FakeClock,
) -> None:
    export = push_and_deliver("PO-2026-0042", django_capture_on_commit_callbacks)
    inbound, outbound = tmp_path / "demo" / "inbound", tmp_path / "demo" / "outbound"
    assert sorted(p.name for p in inbound.iterdir()) == [export.filename]

    assert "1 accepted" in simulate_demo()  # what `make run`'s demo ERP does every 2 s
    assert not list(inbound.iterdir())  # consumed by the simulated ERP
    ERPConnection.objects.filter(pk=demo_connection.pk).update(next_poll_at=timezone.now())  # its interval passed
    Engine(inline=True).round()  # what the engine in the cluster does within a tick: the answer is seen...
    assert ERPExport.objects.get(pk=export.pk).status == ERPExport.Status.SENT
    waited = ERPConnection.objects.get(pk=demo_connection.pk).next_poll_at - timezone.now()
    assert waited.total_seconds() <= demo_connection.min_ack_age_seconds  # ...and read once old enough:
    clock.now += demo_connection.min_ack_age_seconds  # the next poll comes then, not an interval later
    ERPConnection.objects.filter(pk=demo_connection.pk).update(next_poll_at=timezone.now())
    Engine(inline=True).round()

    export.refresh_from_db()
    assert export.status == ERPExport.Status.ACKED and export.erp_order_number == erp_order_number(str(export.id))
    draft = DraftOrder.objects.get(order_number="PO-2026-0042")
    assert draft.status == DraftOrder.Status.CONFIRMED and draft.erp_order_id == export.erp_order_number
    assert [p.name for p in (outbound / "processed").iterdir()] == [f"ack_{export.filename}"]


def test_migrate_and_load_demo_leave_no_demo_schedule(demo_connection: ERPConnection) -> None:
    """Earlier versions ran the demo ERP as a 45 s worker task every minute: the next migrate removes it."""
    Schedule.objects.create(name="orderflow demo: simulated ERP answers exports",
                            func="connectors.demo_tasks.answer_demo_exports", schedule_type=Schedule.MINUTES,
                            minutes=1, repeats=-1)
    ensure_schedules()  # what every migrate (every deploy) runs
    assert not Schedule.objects.filter(func__startswith="connectors.demo").exists()
    assert sorted(Schedule.objects.values_list("func", flat=True)) == sorted(f for f, _m in SCHEDULES.values())


@pytest.mark.parametrize("change", ["deleted", "repointed"])
def test_the_demo_erp_never_answers_a_dropzone_that_is_no_longer_the_demos(
        demo_connection: ERPConnection, tmp_path: Path, change: str) -> None:
    stray = tmp_path / "demo" / "inbound" / "20261126T120501Z_demo_PO-1_0123abcd.json"
    stray.write_text("{}")
    if change == "deleted":
        demo_connection.delete()
    else:  # now a real ERP's dropzone: its files are that ERP's to import, not the simulator's to answer
        ERPConnection.objects.filter(pk=demo_connection.pk).update(transport="sftp", host="erp.example.com")

    with pytest.raises(CommandError, match="Not simulating the demo ERP"):
        simulate_demo()
    assert stray.exists() and not list((tmp_path / "demo" / "outbound").glob("*.json"))
