"""Ctrl-C stops the long tasks at their next pause: the cluster is not held for their whole budget.

django-q2 waits for running tasks before it stops, and its workers ignore SIGINT. A poll task keeps
polling for up to 100 s, a delivery task drains for up to 50 s: `make run`'s Ctrl-C gave up on the
cluster after 15 s and killed it. Here SIGINT is raised from inside the task's pause, as a
terminal's Ctrl-C reaches a worker, and the test counts what the task did after it.
"""

from __future__ import annotations

import signal
from types import ModuleType

import pytest
from django.utils import timezone

from connectors import tasks
from connectors.inbound import polling
from connectors.models import ERPConnection, ERPExport
from connectors.outbound import delivery


def _ctrl_c_at_first_sleep(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[float]:
    """The module's ``_sleep`` records each pause; the first one receives a Ctrl-C."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(module, "_sleep", sleep)
    return slept


def test_ctrl_c_ends_a_poll_task_at_its_next_pause(local_connection: ERPConnection, monkeypatch) -> None:
    ERPConnection.objects.filter(pk=local_connection.pk).update(poll_interval_seconds=10)
    slept = _ctrl_c_at_first_sleep(monkeypatch, polling)
    before = signal.getsignal(signal.SIGINT)
    tasks.poll_connection(local_connection.pk, force=True)  # would keep polling for 100 s
    assert slept == [1.0]  # it polled, paused a second of its 10 s wait, heard the Ctrl-C and ended
    conn = ERPConnection.objects.get(pk=local_connection.pk)
    assert conn.poll_claim_token is None and conn.last_poll_ok  # the claim is released for the next cluster
    assert signal.getsignal(signal.SIGINT) is before  # and the worker ignores Ctrl-C again afterwards


def test_ctrl_c_during_the_min_age_recheck_ends_the_poll(local_connection: ERPConnection, local_dropzone,
                                                         make_draft, monkeypatch) -> None:
    """A file seen for the first time is re-checked within the poll after up to 15 s: Ctrl-C cuts that short."""
    ERPConnection.objects.filter(pk=local_connection.pk).update(min_ack_age_seconds=10, poll_interval_seconds=60)
    export = ERPExport.objects.create(draft=make_draft(status="PUSHED"), connection=local_connection, status="SENT",
                                      sent_at=timezone.now(), filename="f.json")
    (local_dropzone / "outbound" / "ack_f.json").write_text(
        f'{{"export_id": "{export.pk}", "status": "accepted", "erp_order_number": "SO-1"}}')
    slept = _ctrl_c_at_first_sleep(monkeypatch, polling)
    tasks.poll_connection(local_connection.pk, force=True)
    assert slept == [1.0]  # not the ten 1 s steps of the min age
    assert ERPExport.objects.get(pk=export.pk).status == "SENT"  # not read: not old enough by our clock
    assert (local_dropzone / "outbound" / "ack_f.json").exists()
    assert ERPConnection.objects.get(pk=local_connection.pk).poll_claim_token is None


def test_ctrl_c_ends_a_delivery_task_after_the_run_in_progress(local_connection: ERPConnection, local_dropzone,
                                                               make_draft, monkeypatch) -> None:
    for n in range(7):
        ERPExport.objects.create(draft=make_draft(order_number=f"PO-{n}", status="PUSHED"),
                                 connection=local_connection, next_attempt_at=timezone.now())
    runs = []
    one_run = delivery.deliver_due_exports

    def run_then_ctrl_c(**kwargs):
        report = one_run(**kwargs, limit=3)  # runs of 3 exports
        runs.append(report)
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while the first run finishes
        return report

    monkeypatch.setattr(delivery, "deliver_due_exports", run_then_ctrl_c)
    tasks.deliver_connection(local_connection.pk)
    assert len(runs) == 1  # the run in progress ended properly; no second one started
    assert ERPExport.objects.filter(status="SENT").count() == 3
    assert len(list((local_dropzone / "inbound").glob("*.json"))) == 3
    assert not ERPExport.objects.exclude(claim_token=None).exists()  # nothing left claimed
