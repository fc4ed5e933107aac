"""The real thing: a ``manage.py qcluster`` process delivers an approved draft and applies its ack.

Everything else in the suite runs django-q2 in sync mode; this proves the
production path: the approval's ``on_commit`` hook enqueues through the ORM
broker into the database, a separate cluster process picks the task up,
delivers the file, and a poll task enqueued the same way applies the ERP's ack.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule, Task
from django_q.tasks import async_task, fetch

from connectors.contract import payloads
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from orderflow.models import DraftOrder
from tests.fixtures.dropzones import names

from . import child_env, manage, running, wait_until

pytestmark = pytest.mark.slow


def test_qcluster_delivers_an_approved_draft_and_applies_its_ack(
    transactional_db: None, make_draft: Callable[..., DraftOrder], local_connection: ERPConnection,
    local_dropzone: Path, tmp_path: Path,
) -> None:
    assert not Conf.SYNC, "this test is about the real cluster; django-q2 must not run tasks inline"
    # The cluster's scheduler would start polling the connection on its own after ~30 s; park the
    # every-minute schedules so each step below is driven (and asserted) by one known task.  The
    # flush after this transactional test recreates them (post_migrate); test_schedules covers them.
    Schedule.objects.update(next_run=timezone.now() + timedelta(days=1))

    draft = make_draft(lines=2)
    draft.status = DraftOrder.Status.APPROVED
    draft.save()

    # No test transaction here: on_commit ran for real and left exactly one task in the broker's table.
    export = ERPExport.objects.get()
    assert export.status == ERPExport.Status.PENDING and export.connection_id == local_connection.pk
    assert get_broker().queue_size() == 1
    if Conf.ORM:
        queued = OrmQ.objects.get()
        assert queued.func() == "connectors.tasks.deliver_connection" and queued.task["args"] == (local_connection.pk,)

    # The worker's media directory is not this process's: like a worker on another machine, whose archive
    # must reach the admin all the same.
    env = child_env(tmp_path / "worker-media", Q_WORKERS="1", Q_TIMEOUT="30", Q_RETRY="60")
    with running(manage("qcluster"), env=env, log=tmp_path / "qcluster.log") as cluster:
        started = time.monotonic()
        wait_until(lambda: ERPExport.objects.filter(pk=export.pk, status=ERPExport.Status.SENT).exists(),
                   what="the cluster to deliver the export", alive=cluster)
        delivered_after = time.monotonic() - started
        export.refresh_from_db()
        assert names(local_dropzone / "inbound") == [export.filename]  # final name only, no temp file
        raw = (local_dropzone / "inbound" / export.filename).read_bytes()
        payloads.validate_document(json.loads(raw))
        assert json.loads(raw)["export_id"] == str(export.id)
        assert bytes(export.payload) == raw and export.attempts == 1
        draft.refresh_from_db()
        assert draft.status == DraftOrder.Status.PUSHED and draft.erp_order_id == export.filename
        # The worker's result reaches the database through the cluster's monitor, a moment later.
        delivered = wait_until(lambda: Task.objects.filter(func="connectors.tasks.deliver_connection").first(),
                               what="the delivery task's result", alive=cluster)
        assert delivered.success and "1 sent" in delivered.result, delivered.result

        # The ERP answers; the poll goes through the broker too (as the every-minute schedule's task would).
        ack = local_dropzone / "outbound" / f"ack_{export.filename.removesuffix('.json')}.json"
        ack.write_text(json.dumps({"export_id": str(export.id), "export_filename": export.filename,
                                   "status": "accepted", "erp_order_number": "SO-4711", "message": "imported"}))
        old = time.time() - 3600
        os.utime(ack, (old, old))
        task_id = async_task("connectors.tasks.poll_connection", local_connection.pk)
        polled = wait_until(lambda: fetch(task_id), what="the poll task's result", alive=cluster)
        assert polled.success and "1 accepted" in polled.result, polled.result

    export.refresh_from_db()
    draft.refresh_from_db()
    assert export.status == ERPExport.Status.ACKED and export.erp_order_number == "SO-4711"
    assert draft.status == DraftOrder.Status.CONFIRMED and draft.erp_order_id == "SO-4711"
    assert names(local_dropzone / "outbound") == [] and names(local_dropzone / "outbound" / "processed") == [ack.name]
    assert list(ConnectorEvent.objects.order_by("id").values_list("kind", flat=True)) == [
        "export_created", "delivered", "ack_accepted", "poll_done"]
    assert get_broker().queue_size() == 0
    print(f"qcluster delivered {delivered_after:.1f} s after start")  # shown with -s / -rP
