"""Operator overrides in the admin: cancel, record an ERP answer, retry — each asks why, records who, needs its
own permission, and goes through the lifecycle's table."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from connectors.models import ConnectorEvent, ERPExport
from connectors.outbound import delivery
from orderflow.models import DraftOrder
from tests.fixtures.dropzones import names

CHANGELIST = "admin:connectors_erpexport_changelist"


def act(client: Client, action: str, export: ERPExport, **data: str):
    return client.post(reverse(CHANGELIST), {"action": action, "_selected_action": [str(export.pk)], **data},
                       follow=True)


@pytest.fixture
def pending(make_draft, local_connection) -> ERPExport:
    draft = make_draft(status=DraftOrder.Status.APPROVED)
    return ERPExport.objects.create(draft=draft, connection=local_connection, next_attempt_at=timezone.now())


@pytest.fixture
def sent(make_draft, local_connection) -> ERPExport:
    draft = make_draft(status=DraftOrder.Status.PUSHED, order_number="PO-SENT")
    return ERPExport.objects.create(draft=draft, connection=local_connection, status="SENT",
                                    sent_at=timezone.now(), filename="x.json")


def test_cancel_asks_why_then_makes_the_draft_new_again(admin_client: Client, pending: ERPExport) -> None:
    page = act(admin_client, "cancel_export", pending).content.decode()
    assert "Cancel undelivered exports" in page and 'name="reason"' in page  # the intermediate page
    assert ERPExport.objects.get().status == "PENDING"
    page = act(admin_client, "cancel_export", pending, apply="1", reason="").content.decode()
    assert "This field is required" in page and ERPExport.objects.get().status == "PENDING"

    page = act(admin_client, "cancel_export", pending, apply="1", reason="customer withdrew the order").content.decode()
    assert "1 export(s) cancelled" in page
    export = ERPExport.objects.get()
    assert export.status == "CANCELLED" and DraftOrder.objects.get().status == "NEW"
    event = ConnectorEvent.objects.get(kind="cancel")
    assert event.actor == "admin" and "customer withdrew the order" in event.message
    # The draft is editable and pushable again.
    html = admin_client.get(reverse("admin:orderflow_draftorder_change", args=[export.draft_id])).content.decode()
    assert "of-push-button" in html


def test_cancel_refuses_what_a_worker_is_delivering(admin_client: Client, pending: ERPExport,
                                                   local_connection) -> None:
    delivery.claim_due_exports(connection=local_connection)  # a worker holds it right now
    page = act(admin_client, "cancel_export", pending, apply="1", reason="x").content.decode()
    assert "a worker is delivering it right now" in page
    assert ERPExport.objects.get().status == "PENDING"


def test_cancel_finds_the_file_of_a_dead_run_and_marks_it_sent(admin_client: Client, pending: ERPExport,
                                                              local_connection, local_dropzone, monkeypatch) -> None:
    from connectors.services import lifecycle

    class Killed(BaseException):
        pass

    real = lifecycle.transition

    def die_before_recording(verb, *args, **kwargs):  # the run renamed the file, then was killed
        if verb == lifecycle.Verb.DELIVERED:
            raise Killed
        return real(verb, *args, **kwargs)

    monkeypatch.setattr(lifecycle, "transition", die_before_recording)
    with pytest.raises(Killed):
        delivery.deliver_due_exports(connection=local_connection)
    monkeypatch.undo()
    ERPExport.objects.update(claimed_until=timezone.now())  # the dead run's lease has run out
    page = act(admin_client, "cancel_export", pending, apply="1", reason="stuck").content.decode()
    assert "it had reached the dropzone already (now marked Sent)" in page
    export = ERPExport.objects.get()
    assert export.status == "SENT" and names(local_dropzone / "inbound") == [export.filename]
    assert DraftOrder.objects.get().status == "PUSHED"


def test_record_confirmation_needs_one_export_a_number_and_a_reason(admin_client: Client, sent: ERPExport,
                                                                   pending: ERPExport) -> None:
    both = admin_client.post(reverse(CHANGELIST), {"action": "record_confirmation",
                                                   "_selected_action": [str(sent.pk), str(pending.pk)]}, follow=True)
    assert "Select exactly one export" in both.content.decode()
    page = act(admin_client, "record_confirmation", sent, apply="1", reason="phoned",
               erp_order_number="SO-PHONE-1").content.decode()
    assert "answer recorded" in page
    draft = DraftOrder.objects.get(pk=sent.draft_id)
    assert draft.status == "CONFIRMED" and draft.erp_order_id == "SO-PHONE-1"
    export = ERPExport.objects.get(pk=sent.pk)
    assert export.status == "ACKED" and export.ack_body["recorded_by"] == "admin"
    event = ConnectorEvent.objects.get(kind="manual_accept")
    assert event.actor == "admin" and "phoned" in event.message
    # The first answer wins: a second one is refused, the draft unchanged.
    page = act(admin_client, "record_rejection", sent, apply="1", reason="changed their mind").content.decode()
    assert "not recorded: its status is ACKED" in page
    assert DraftOrder.objects.get(pk=sent.draft_id).status == "CONFIRMED"


def test_record_rejection_shows_the_reason(admin_client: Client, sent: ERPExport) -> None:
    act(admin_client, "record_rejection", sent, apply="1", reason="the customer is blocked in the ERP")
    export = ERPExport.objects.get(pk=sent.pk)
    assert export.status == "REJECTED" and "blocked in the ERP" in export.last_error
    assert DraftOrder.objects.get(pk=sent.draft_id).status == "REJECTED"


@pytest.mark.parametrize(("action", "permission"), [
    ("cancel_export", "cancel_export"), ("record_confirmation", "record_answer"),
    ("record_rejection", "record_answer"), ("retry_delivery", "retry_export"),
])
def test_each_override_needs_its_own_permission(client: Client, sent: ERPExport, pending: ERPExport,
                                                action: str, permission: str) -> None:
    user = User.objects.create_user("clerk", password="pw-Clerk-1", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_erpexport"))
    pending.draft.organization.members.add(user)
    client.force_login(user)
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert f'value="{action}"' not in html  # not offered
    response = act(client, action, pending, apply="1", reason="x", erp_order_number="SO-1")
    assert ERPExport.objects.get(pk=pending.pk).status == "PENDING"
    assert response.status_code == 200

    user.user_permissions.add(Permission.objects.get(codename=permission))
    user = User.objects.get(pk=user.pk)
    client.force_login(user)
    assert f'value="{action}"' in client.get(reverse(CHANGELIST)).content.decode()
