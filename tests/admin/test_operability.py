"""Issue 11: health at a glance, the file and its story per order, buttons where the work is."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from connectors.inbound import polling
from connectors.models import ConnectorEvent, EngineProcess, ERPConnection, ERPExport
from connectors.outbound import pushing
from orderflow.models import DraftOrder

pytestmark = pytest.mark.usefixtures("sync_tasks")


def push(drafts, capture, actor: str = "alice") -> None:
    with capture(execute=True):
        pushing.push_drafts(drafts=drafts, actor=actor)


def answer(local_dropzone, export: ERPExport, body: dict) -> None:
    kind = "ack" if body.get("status") == "accepted" else "error"
    path = local_dropzone / "outbound" / f"{kind}_{export.filename.removesuffix('.json')}.json"
    path.write_text(json.dumps({"export_id": str(export.pk), **body}))


def test_home_page_shows_each_connections_health(admin_client: Client, make_connection, local_connection,
                                                 make_draft, django_capture_on_commit_callbacks) -> None:
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "of-health-degraded" in html and "never tested" in html
    push([make_draft()], django_capture_on_commit_callbacks)
    polling.poll_connection(connection=local_connection, force=True)
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "of-health-healthy" in html and "1 awaiting ack" in html
    assert f"?connection__id__exact={local_connection.pk}&amp;status__exact=SENT" in html

    ERPConnection.objects.filter(pk=local_connection.pk).update(last_error_code="host_key_changed")
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "of-health-failing" in html and "the server&#x27;s key CHANGED" in html

    ERPConnection.objects.filter(pk=local_connection.pk).update(last_error_code="", is_active=False)
    make_connection(name="new ERP", export_path="/new")
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "of-health-draining" in html
    html = admin_client.get(reverse("admin:connectors_erpconnection_changelist")).content.decode()
    assert "draining (1 awaiting an answer)" in html


def test_home_page_shows_the_work_waiting_the_engines_and_when_each_connection_was_polled(
        admin_client: Client, local_connection, make_draft) -> None:
    """Issue 17, point 7: is anything running, is work piling up, is each partner polled on time."""
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "No dropzone engine is running" in html and "never (every 60 s)" in html
    assert "Waiting to start: 1 job, the oldest for 0 s." in html  # the new connection's first poll

    now = timezone.now()
    EngineProcess.objects.create(name="worker-1:42", host="worker-1", pid=42, started_at=now, seen_at=now,
                                 sessions=16, busy=3)
    EngineProcess.objects.create(name="worker-2:7", host="worker-2", pid=7, started_at=now, seen_at=now,
                                 stopped_at=now, sessions=16)  # stopped: not counted
    ERPExport.objects.create(draft=make_draft(status="APPROVED"), connection=local_connection,
                             next_attempt_at=now - timedelta(minutes=3))
    ERPConnection.objects.filter(pk=local_connection.pk).update(
        last_poll_at=now - timedelta(minutes=2), last_poll_ok=False, next_poll_at=now + timedelta(minutes=1),
        last_error_code="over_budget", poll_failures=1)
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "1 dropzone engine running (3 of 16 busy)." in html
    assert "Waiting to start: 1 job, the oldest for 3 min." in html
    assert "2 min ago (every 60 s)" in html
    assert "of-health-degraded" in html and "cut off: the server did not finish its last job" in html


def test_the_file_and_the_answer_can_be_downloaded_with_the_permission(
    admin_client: Client, client: Client, make_draft, local_connection, local_dropzone, org,
    django_capture_on_commit_callbacks,
) -> None:
    push([make_draft()], django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    page = admin_client.get(reverse("admin:connectors_erpexport_change", args=[export.pk])).content.decode()
    assert "Download the file" in page and "/media/" not in page
    download = admin_client.get(reverse("admin:connectors_erpexport_payload", args=[export.pk]))
    assert b"".join(download.streaming_content) == (local_dropzone / "inbound" / export.filename).read_bytes()
    assert export.filename in download["Content-Disposition"]

    answer(local_dropzone, export, {"status": "accepted", "erp_order_number": "SO-1", "message": "ok"})
    polling.poll_connection(connection=local_connection, force=True)
    text = admin_client.get(reverse("admin:connectors_erpexport_answer", args=[export.pk])).content.decode()
    assert '"erp_order_number": "SO-1"' in text and text.count("\n") > 3  # pretty-printed

    staff = User.objects.create_user("viewer", password=None, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_erpexport"))
    org.members.add(staff)
    client.force_login(staff)
    assert client.get(reverse("admin:connectors_erpexport_payload", args=[export.pk])).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="download_payload"))
    client.force_login(User.objects.get(pk=staff.pk))
    assert client.get(reverse("admin:connectors_erpexport_payload", args=[export.pk])).status_code == 200
    org.members.remove(staff)
    assert client.get(reverse("admin:connectors_erpexport_payload", args=[export.pk])).status_code == 404


def test_the_draft_page_tells_its_story(admin_client: Client, make_draft, local_connection, local_dropzone,
                                        django_capture_on_commit_callbacks) -> None:
    draft = make_draft()
    push([draft], django_capture_on_commit_callbacks, actor="alice")
    export = ERPExport.objects.get()
    answer(local_dropzone, export, {"status": "rejected", "errors": [{"message": "BOLT-M8X41 is unknown"}]})
    polling.poll_connection(connection=local_connection, force=True)
    page = admin_client.get(reverse("admin:orderflow_draftorder_change", args=[draft.pk])).content.decode()
    assert "of-status-rejected" in page and "BOLT-M8X41 is unknown" in page
    story = page[page.index("of-timeline"):]
    assert story.index("alice") < story.index("Delivered") < story.index("rejected by the ERP")
    listing = admin_client.get(reverse("admin:orderflow_draftorder_changelist")).content.decode()
    assert "BOLT-M8X41 is unknown" in listing  # the reason, not just "Rejected by ERP"


def test_an_overdue_ack_shows_on_the_drafts_too(admin_client: Client, make_draft, local_connection,
                                                django_capture_on_commit_callbacks) -> None:
    push([make_draft()], django_capture_on_commit_callbacks)
    ERPExport.objects.update(sent_at=timezone.now() - timedelta(hours=3))
    listing = admin_client.get(reverse("admin:orderflow_draftorder_changelist")).content.decode()
    assert "ack overdue" in listing


def test_poll_now_and_deliver_now_are_posts_with_their_permission(
    admin_client: Client, client: Client, make_draft, local_connection, local_dropzone, org,
    django_capture_on_commit_callbacks,
) -> None:
    change = reverse("admin:connectors_erpconnection_change", args=[local_connection.pk])
    html = admin_client.get(change).content.decode()
    assert "of-poll-now" in html and "of-deliver-now" in html
    poll_now = reverse("admin:connectors_erpconnection_poll_now", args=[local_connection.pk])
    assert admin_client.get(poll_now).status_code == 405
    DraftOrder.objects.filter(pk=make_draft().pk).update(status="APPROVED")
    # Waiting an hour for its retry: "Deliver now" does not wait for it.
    ERPExport.objects.create(draft=DraftOrder.objects.get(), connection=local_connection,
                             next_attempt_at=timezone.now() + timedelta(hours=1))
    deliver_now = reverse("admin:connectors_erpconnection_deliver_now", args=[local_connection.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(deliver_now, follow=True)
    assert "1 pending export(s) of ERP (Local or mounted directory) are being delivered now" in \
        response.content.decode()
    assert ERPExport.objects.get().status == "SENT"
    response = admin_client.post(deliver_now, follow=True)  # nothing left: said as a warning, not a success
    assert "Nothing to deliver" in response.content.decode() and "messagelist" in response.content.decode()
    answer(local_dropzone, ERPExport.objects.get(), {"status": "accepted", "erp_order_number": "SO-7"})
    ERPConnection.objects.update(next_poll_at=timezone.now() + timedelta(hours=1))  # not due: forced anyway
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(poll_now, follow=True)
    assert DraftOrder.objects.get().status == "CONFIRMED"

    staff = User.objects.create_user("viewer", password=None, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_erpconnection"))
    org.members.add(staff)
    client.force_login(staff)
    assert "of-poll-now" not in client.get(change).content.decode()
    assert client.post(poll_now).status_code == 403


def test_after_a_key_change_the_failed_exports_are_one_click_away(
    admin_client: Client, make_draft, local_connection, local_dropzone, django_capture_on_commit_callbacks,
) -> None:
    ERPConnection.objects.filter(pk=local_connection.pk).update(export_path="/missing")
    push([make_draft(order_number="PO-1"), make_draft(order_number="PO-2")], django_capture_on_commit_callbacks)
    assert ERPExport.objects.filter(status="FAILED").count() == 2
    ERPConnection.objects.filter(pk=local_connection.pk).update(export_path="/dropzone/inbound")
    change = reverse("admin:connectors_erpconnection_change", args=[local_connection.pk])
    assert "Retry 2 failed exports" in admin_client.get(change).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:connectors_erpconnection_retry_failed",
                                             args=[local_connection.pk]), follow=True)
    assert "2 failed export(s)" in response.content.decode()
    assert ERPExport.objects.filter(status="SENT").count() == 2
    assert DraftOrder.objects.filter(status="PUSHED").count() == 2
    assert ConnectorEvent.objects.filter(kind="delivery_retry_requested", actor="admin").count() == 2
