"""The real thing: a ``manage.py qcluster`` process delivers an approved draft and applies its ack.

Everything else in the suite runs the work inline; this proves the production path: the approval commits a
PENDING export, the dropzone engine in a separate cluster process finds it by itself (no django-q2 task is
queued for a partner's work), delivers the file, polls the connection when its interval has passed and
applies the ERP's ack.
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
from django_q.models import Schedule

from connectors.contract import payloads
from connectors.models import ConnectorEvent, EngineProcess, ERPConnection, ERPExport
from orderflow.models import DraftOrder
from tests.fixtures.dropzones import names

from . import child_env, manage, running, wait_until

pytestmark = pytest.mark.slow


def test_qcluster_delivers_an_approved_draft_and_applies_its_ack(
    transactional_db: None, make_draft: Callable[..., DraftOrder], local_connection: ERPConnection,
    local_dropzone: Path, tmp_path: Path,
) -> None:
    assert not Conf.SYNC, "this test is about the real cluster; nothing may run inline"
    Schedule.objects.update(next_run=timezone.now() + timedelta(days=1))  # only the engine works here
    ERPConnection.objects.filter(pk=local_connection.pk).update(
        poll_interval_seconds=3600, next_poll_at=timezone.now() + timedelta(hours=1))

    draft = make_draft(lines=2)
    draft.status = DraftOrder.Status.APPROVED
    draft.save()

    export = ERPExport.objects.get()
    assert export.status == ERPExport.Status.PENDING and export.connection_id == local_connection.pk
    assert get_broker().queue_size() == 0  # nothing queued: the engine finds due exports by itself

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

        # The ERP answers; the connection is polled once its interval has passed (made due here).
        ack = local_dropzone / "outbound" / f"ack_{export.filename.removesuffix('.json')}.json"
        ack.write_text(json.dumps({"export_id": str(export.id), "export_filename": export.filename,
                                   "status": "accepted", "erp_order_number": "SO-4711", "message": "imported"}))
        old = time.time() - 3600
        os.utime(ack, (old, old))
        ERPConnection.objects.filter(pk=local_connection.pk).update(next_poll_at=timezone.now())
        wait_until(lambda: ERPExport.objects.filter(pk=export.pk, status=ERPExport.Status.ACKED).exists(),
                   what="the cluster to apply the ack", alive=cluster)
        engine = wait_until(lambda: EngineProcess.objects.filter(deliveries__gte=1, polls__gte=1).first(),
                            what="the engine's heartbeat", alive=cluster)
        assert engine.stopped_at is None and engine.sessions == 16

    export.refresh_from_db()
    draft.refresh_from_db()
    assert export.status == ERPExport.Status.ACKED and export.erp_order_number == "SO-4711"
    assert draft.status == DraftOrder.Status.CONFIRMED and draft.erp_order_id == "SO-4711"
    assert names(local_dropzone / "outbound") == [] and names(local_dropzone / "outbound" / "processed") == [ack.name]
    assert list(ConnectorEvent.objects.order_by("id").values_list("kind", flat=True)) == [
        "export_created", "delivered", "ack_accepted", "poll_done"]
    assert get_broker().queue_size() == 0
    assert EngineProcess.objects.get(pk=engine.pk).stopped_at is not None  # it said goodbye on SIGTERM
    print(f"qcluster delivered {delivered_after:.1f} s after start")  # shown with -s / -rP
