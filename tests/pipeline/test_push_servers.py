"""Approval to file on the real servers (local dir, OpenSSH sshd, pyftpdlib FTP)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from connectors.contract import payloads
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from connectors.outbound import delivery
from orderflow.models import DraftOrder
from tests.fixtures.dropzones import Dropzone, names, repoint
from tests.fixtures.pipeline import Killed, die_before_recording_deliveries
from tests.servers.blackhole import closed_port

pytestmark = pytest.mark.usefixtures("sync_tasks")


def approve(draft: DraftOrder, capture) -> None:
    with capture(execute=True):
        draft.status = DraftOrder.Status.APPROVED
        draft.save()


def test_approved_draft_arrives_in_the_dropzone(dropzone: Dropzone, make_draft,
                                                django_capture_on_commit_callbacks) -> None:
    draft = make_draft(lines=3, order_number="PO 2026/0042 ü")
    approve(draft, django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    assert export.status == "SENT", export.last_error
    assert names(dropzone.inbound) == [export.filename]
    assert f"_acme_PO-2026-0042_{str(export.id)[:8]}.json" in export.filename
    document = json.loads((dropzone.inbound / export.filename).read_bytes())
    payloads.validate_document(document)
    assert document["export_id"] == str(export.id)
    assert document["order"]["order_number"] == "PO 2026/0042 ü"
    assert len(document["order"]["lines"]) == 3
    assert DraftOrder.objects.get().status == "PUSHED"


def test_several_exports_share_one_connection(dropzone: Dropzone, make_draft) -> None:
    for n in range(6):
        ERPExport.objects.create(draft=make_draft(order_number=f"PO-{n}"), connection=dropzone.connection)
    report = delivery.deliver_due_exports(connection=dropzone.connection)
    assert len(report.sent) == 6 and not report.failed
    assert len(names(dropzone.inbound)) == 6
    assert set(ERPExport.objects.values_list("status", flat=True)) == {"SENT"}


def test_unreachable_server_is_retried_then_delivered(remote_dropzone: Dropzone, make_draft,
                                                      django_capture_on_commit_callbacks) -> None:
    dropzone = remote_dropzone
    conn = dropzone.connection
    real_port = conn.port
    repoint(conn, port=closed_port())
    approve(make_draft(), django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    assert export.status == "PENDING" and export.attempts == 1 and export.last_error
    repoint(conn, port=real_port)
    ERPExport.objects.filter(pk=export.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    delivery.deliver_due_exports(connection=ERPConnection.objects.get(pk=conn.pk))
    export.refresh_from_db()
    assert export.status == "SENT" and names(dropzone.inbound) == [export.filename]


def test_missing_export_dir_fails_permanently(dropzone: Dropzone, make_draft,
                                              django_capture_on_commit_callbacks) -> None:
    ERPConnection.objects.filter(pk=dropzone.connection.pk).update(
        export_path=dropzone.connection.export_path + "/missing")
    approve(make_draft(), django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    assert export.status == "FAILED" and export.attempts == 1
    assert DraftOrder.objects.get().status == "PUSH_FAILED"


@pytest.mark.parametrize("dropzone", ["sftp", "ftp"], indirect=True)  # sftp: one pipelined batch per lane
def test_a_run_killed_after_its_renames_is_recorded_later_without_a_second_file(dropzone: Dropzone, make_draft,
                                                                              monkeypatch) -> None:
    exports = [ERPExport.objects.create(draft=make_draft(order_number=f"PO-{n}"), connection=dropzone.connection,
                                        next_attempt_at=timezone.now()) for n in range(12)]
    die_before_recording_deliveries(monkeypatch)
    with pytest.raises(Killed):
        delivery.deliver_due_exports(connection=ERPConnection.objects.get(pk=dropzone.connection.pk))
    monkeypatch.undo()
    landed = names(dropzone.inbound)
    assert landed and not [n for n in landed if n.endswith(".tmp")]
    assert not ERPExport.objects.filter(status="SENT").exists()

    ERPExport.objects.update(claimed_until=timezone.now() - timedelta(seconds=1), next_attempt_at=timezone.now())
    report = delivery.deliver_due_exports(connection=ERPConnection.objects.get(pk=dropzone.connection.pk))
    assert len(report.sent) == 12 and not report.failed
    assert sorted(names(dropzone.inbound)) == sorted(ERPExport.objects.values_list("filename", flat=True))
    found = ConnectorEvent.objects.filter(kind="delivered", message__contains="already in the dropzone").count()
    assert found == len(landed)  # what the dead run renamed is recognised by its bytes, not sent again
    assert DraftOrder.objects.filter(status="PUSHED").count() == len(exports)
