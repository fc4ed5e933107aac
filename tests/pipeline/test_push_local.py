"""The export pipeline end to end on a local dropzone: approval → file, faults, retries, crashes."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from connectors.contract import payloads
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from connectors.outbound import delivery
from connectors.outbound.pushing import push_drafts
from orderflow.models import DraftOrder
from tests.fixtures.pipeline import Killed, die_before_recording_deliveries

pytestmark = pytest.mark.usefixtures("sync_tasks")


def approve(draft: DraftOrder, capture) -> None:
    with capture(execute=True):
        draft.status = DraftOrder.Status.APPROVED
        draft.save()


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def make_due(export: ERPExport) -> None:
    ERPExport.objects.filter(pk=export.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def test_approval_delivers_a_valid_file(make_draft, local_connection, local_dropzone, tmp_path,
                                        django_capture_on_commit_callbacks) -> None:
    draft = make_draft(lines=2)
    approve(draft, django_capture_on_commit_callbacks)

    export = ERPExport.objects.get()
    draft.refresh_from_db()
    assert export.status == "SENT" and export.sent_at and export.attempts == 1
    assert draft.status == "PUSHED" and draft.erp_order_id == export.filename
    assert files(local_dropzone / "inbound") == [export.filename]  # no temp file left
    assert export.filename.endswith(f"_acme_PO-2026-0042_{str(export.id)[:8]}.json")
    raw = (local_dropzone / "inbound" / export.filename).read_bytes()
    assert raw.endswith(b"\n") and not raw.startswith(b"\xef\xbb\xbf")
    document = json.loads(raw)
    payloads.validate_document(document)
    assert document["export_id"] == str(export.id)
    assert document["order"]["order_number"] == "PO-2026-0042"
    assert [line["sku"] for line in document["order"]["lines"]] == ["BOLT-M8X41", "BOLT-M8X42"]
    assert document["order"]["lines"][0]["quantity"] == "250"
    assert document["order"]["total_net"] == "60.00"
    # The archive holds the same bytes, with their hash and size, in the export's own row: committed with
    # its name, and readable by the admin and every worker on any machine without a shared media directory.
    assert bytes(export.payload) == raw and export.payload_size == len(raw)
    assert not list((tmp_path / "media").rglob("*")), "no file written to Django storage"
    assert ConnectorEvent.objects.filter(kind="delivered", export=export).exists()


def test_saving_an_approved_draft_again_does_not_push_again(make_draft, local_connection,
                                                            django_capture_on_commit_callbacks) -> None:
    draft = make_draft()
    approve(draft, django_capture_on_commit_callbacks)
    draft.refresh_from_db()
    draft.notes = "edited"
    with django_capture_on_commit_callbacks(execute=True):
        draft.save()
    assert ERPExport.objects.count() == 1


def test_mapping_is_applied(make_draft, make_connection, local_dropzone, django_capture_on_commit_callbacks) -> None:
    make_connection(
        transport="local", export_path="/dropzone/inbound",
        mapping={"rename": {"order.lines[].sku": "article_no"}, "drop": ["order.notes"],
                 "add": {"sender": "orderflow", "order.lines[].warehouse": "W1"}},
    )
    approve(make_draft(), django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    document = json.loads((local_dropzone / "inbound" / export.filename).read_bytes())
    assert document["sender"] == "orderflow" and document["export_id"] == str(export.id)
    assert "notes" not in document["order"]
    assert document["order"]["lines"][0]["article_no"] == "BOLT-M8X41"
    assert "sku" not in document["order"]["lines"][0]
    assert document["order"]["lines"][0]["warehouse"] == "W1"


def test_transient_fault_then_recovery(make_draft, local_connection, local_dropzone,
                                       django_capture_on_commit_callbacks, monkeypatch) -> None:
    from connectors.transports.base import TransportError
    from connectors.transports.local import LocalTransport

    real_write = LocalTransport.write_file

    def flaky_write(self, path, data):  # a disk that is briefly unavailable (EIO-like)
        raise TransportError("I/O error writing to the share", permanent=False, code="network")

    monkeypatch.setattr(LocalTransport, "write_file", flaky_write)
    draft = make_draft()
    approve(draft, django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    assert export.status == "PENDING" and export.attempts == 1
    assert export.next_attempt_at > timezone.now() + timedelta(seconds=20)
    assert "I/O error" in export.last_error
    assert files(local_dropzone / "inbound") == []
    first_name = export.filename

    monkeypatch.setattr(LocalTransport, "write_file", real_write)
    assert delivery.deliver_due_exports(connection=local_connection).sent == []  # not due yet
    make_due(export)
    report = delivery.deliver_due_exports(connection=local_connection)
    export.refresh_from_db()
    assert report.sent == [first_name]
    assert export.status == "SENT" and export.attempts == 2 and export.filename == first_name
    assert files(local_dropzone / "inbound") == [first_name]
    assert DraftOrder.objects.get().status == "PUSHED"


def test_permanent_fault_fails_and_shows_the_reason(make_draft, make_connection, tmp_path, admin_client,
                                                    django_capture_on_commit_callbacks) -> None:
    make_connection(transport="local", export_path="/does-not-exist")
    approve(make_draft(), django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    assert export.status == "FAILED" and export.attempts == 1
    assert DraftOrder.objects.get().status == "PUSH_FAILED"
    html = admin_client.get(reverse("admin:connectors_erpexport_change", args=[export.pk])).content.decode()
    assert "does-not-exist" in html
    html = admin_client.get(reverse("admin:connectors_erpexport_changelist")).content.decode()
    assert "of-status-failed" in html


def test_retry_budget_is_bounded(make_draft, local_connection, django_capture_on_commit_callbacks,
                                 monkeypatch) -> None:
    from connectors.transports.base import TransportError
    from connectors.transports.local import LocalTransport

    def down(self, path, data):
        raise TransportError("share unavailable", permanent=False, code="network")

    monkeypatch.setattr(LocalTransport, "write_file", down)
    ERPConnection.objects.filter(pk=local_connection.pk).update(max_attempts=3)
    approve(make_draft(), django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    for _ in range(2):
        make_due(export)
        delivery.deliver_due_exports(connection=ERPConnection.objects.get())
    export.refresh_from_db()
    assert export.status == "FAILED" and export.attempts == 3
    assert export.last_error.startswith("gave up after 3 attempts")
    make_due(export)
    assert delivery.deliver_due_exports(connection=ERPConnection.objects.get()).sent == []


def test_no_active_connection_waits_then_delivers_on_activation(
    make_draft, make_connection, local_dropzone, django_capture_on_commit_callbacks
) -> None:
    conn = make_connection(transport="local", export_path="/dropzone/inbound", is_active=False)
    approve(make_draft(), django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    assert export.connection is None and export.status == "PENDING"
    assert ConnectorEvent.objects.filter(kind="export_waiting").exists()
    with django_capture_on_commit_callbacks(execute=True):
        conn.is_active = True
        conn.save()
    export.refresh_from_db()
    assert export.connection == conn and export.status == "SENT"
    assert files(local_dropzone / "inbound") == [export.filename]


def test_crash_between_rename_and_database_update(make_draft, local_connection, local_dropzone,
                                                  django_capture_on_commit_callbacks, monkeypatch) -> None:
    die_before_recording_deliveries(monkeypatch)
    with pytest.raises(Killed):
        approve(make_draft(), django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    assert export.status == "PENDING" and export.claimed_until  # the dead worker's claim
    assert files(local_dropzone / "inbound") == [export.filename]

    monkeypatch.undo()
    assert delivery.deliver_due_exports(connection=local_connection).sent == []  # the claim still holds
    ERPExport.objects.filter(pk=export.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    report = delivery.deliver_due_exports(connection=local_connection)
    export.refresh_from_db()
    assert report.sent == [export.filename] and export.status == "SENT"
    assert files(local_dropzone / "inbound") == [export.filename]  # no second file
    assert "already in the dropzone" in ConnectorEvent.objects.get(kind="delivered").message


def test_crash_after_temp_write_leaves_no_stale_temp(make_draft, local_connection, local_dropzone,
                                                     django_capture_on_commit_callbacks, monkeypatch) -> None:
    from connectors.transports.local import LocalTransport

    class Killed(BaseException):
        pass

    def die(self, src, dst):
        raise Killed

    monkeypatch.setattr(LocalTransport, "rename_no_overwrite", die)
    with pytest.raises(Killed):
        approve(make_draft(), django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    assert files(local_dropzone / "inbound") == [export.filename + ".tmp"]
    monkeypatch.undo()
    ERPExport.objects.filter(pk=export.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    delivery.deliver_due_exports(connection=local_connection)
    export.refresh_from_db()
    assert export.status == "SENT"
    assert files(local_dropzone / "inbound") == [export.filename]


def test_a_foreign_file_with_our_name_is_never_overwritten(make_draft, local_connection, local_dropzone,
                                                          django_capture_on_commit_callbacks, monkeypatch) -> None:
    from connectors.transports.local import LocalTransport

    real_put_atomic = LocalTransport.put_atomic

    def someone_else_first(self, directory, name, data):
        (local_dropzone / "inbound" / name).write_bytes(b"not ours\n")  # another writer used our name
        return real_put_atomic(self, directory, name, data)

    monkeypatch.setattr(LocalTransport, "put_atomic", someone_else_first)
    approve(make_draft(), django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    assert export.status == "FAILED" and "not overwritten" in export.last_error
    assert (local_dropzone / "inbound" / export.filename).read_bytes() == b"not ours\n"


def test_two_workers_never_claim_the_same_export(make_draft, make_connection, local_dropzone) -> None:
    conn = make_connection(transport="local", export_path="/dropzone/inbound")
    for n in range(5):
        draft = make_draft(order_number=f"PO-{n}")
        ERPExport.objects.create(draft=draft, connection=conn)
    first = delivery.claim_due_exports(connection=conn)
    second = delivery.claim_due_exports(connection=conn)
    assert len(first) == 5 and second == []


def test_push_action_and_retry_action_report_counts(admin_client, make_draft, make_connection, tmp_path,
                                                    local_dropzone, django_capture_on_commit_callbacks) -> None:
    conn = make_connection(transport="local", export_path="/missing")
    new, pushed = make_draft(order_number="PO-1"), make_draft(order_number="PO-2", status="PUSHED")
    url = reverse("admin:orderflow_draftorder_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"action": "push_to_erp", "_selected_action": [new.pk, pushed.pk]},
                                     follow=True)
    html = response.content.decode()
    assert "1 draft(s) approved and queued" in html and "1 draft(s) skipped" in html
    export = ERPExport.objects.get()
    assert export.status == "FAILED"  # the export dir is missing

    ERPConnection.objects.filter(pk=conn.pk).update(export_path="/dropzone/inbound")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:connectors_erpexport_changelist"),
                                     {"action": "retry_delivery", "_selected_action": [export.pk]}, follow=True)
    assert "1 export(s) queued for delivery again" in response.content.decode()
    export.refresh_from_db()
    assert export.status == "SENT" and files(local_dropzone / "inbound") == [export.filename]
    assert DraftOrder.objects.get(pk=new.pk).status == "PUSHED"


def test_repush_after_rejection_makes_a_new_export(make_draft, local_connection,
                                                   django_capture_on_commit_callbacks) -> None:
    draft = make_draft(status="REJECTED")
    with django_capture_on_commit_callbacks(execute=True):
        counts = push_drafts(drafts=[draft])
    assert counts.done == 1
    with django_capture_on_commit_callbacks(execute=True):
        push_drafts(drafts=[DraftOrder.objects.get()])  # now PUSHED: skipped
    assert ERPExport.objects.count() == 1


def test_deliver_exports_command(make_draft, local_connection, local_dropzone, capsys) -> None:
    draft = make_draft()
    ERPExport.objects.create(draft=draft, connection=local_connection)
    call_command("deliver_exports", "--connection", str(local_connection.pk), "--verbose")
    out = capsys.readouterr().out
    assert "1 sent" in out and "sent: " in out
    assert len(files(local_dropzone / "inbound")) == 1


def test_a_deactivated_connection_holds_its_exports(make_draft, local_connection, local_dropzone) -> None:
    export = ERPExport.objects.create(draft=make_draft(), connection=local_connection)
    ERPConnection.objects.filter(pk=local_connection.pk).update(is_active=False)
    assert delivery.claim_due_exports(connection=local_connection) == []
    ERPConnection.objects.filter(pk=local_connection.pk).update(is_active=True)
    assert len(delivery.deliver_due_exports(connection=ERPConnection.objects.get()).sent) == 1
    export.refresh_from_db()
    assert export.status == "SENT"


def test_push_button_on_the_draft_page(admin_client, make_draft, local_connection, local_dropzone,
                                       django_capture_on_commit_callbacks) -> None:
    draft = make_draft()
    page = reverse("admin:orderflow_draftorder_change", args=[draft.pk])
    html = admin_client.get(page).content.decode()
    assert "of-push-button" in html
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:orderflow_draftorder_changelist"),
                                     {"action": "push_to_erp", "_selected_action": [draft.pk]}, follow=True)
    assert "1 draft(s) approved and queued" in response.content.decode()
    assert DraftOrder.objects.get().status == "PUSHED"
    assert "of-push-button" not in admin_client.get(page).content.decode()  # pushed: locked, no button
