"""Issue 18, finding 6: the smaller walls.

The Users admin showed staff with ``view_user`` every organization's users (and the members autocomplete every
user); a download worked without ``view_erpexport``; ERP texts were stored unclipped (200 KB in one event); an
ack file whose name had a control character was ignored forever; a "private key" that was not one was accepted
at save; clearing the key left its public line shown.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from connectors.forms import ERPConnectionForm
from connectors.inbound import polling
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from orderflow.models import Organization
from tests.fixtures.dropzones import Dropzone, names
from tests.test_secrets import form_data


def staff(org: Organization, *codenames: str) -> Client:
    user = User.objects.create_user(f"staff-{'-'.join(codenames)[:100]}", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    org.members.add(user)
    client = Client()
    client.force_login(user)
    return client


def test_staff_see_no_users_admin_and_no_users_in_the_autocomplete(org: Organization, admin_client: Client) -> None:
    other = Organization.objects.create(slug="globex", name="Globex Ltd")
    other.members.add(User.objects.create_user("globex-clerk", is_staff=True))
    client = staff(org, "view_user", "change_user", "view_organization", "change_organization")
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 403
    assert "globex-clerk" not in client.get(reverse("admin:index")).content.decode()
    autocomplete = client.get(reverse("admin:autocomplete"), {"app_label": "orderflow", "model_name": "organization",
                                                               "field_name": "members", "term": "globex"})
    assert autocomplete.status_code == 403 and b"globex-clerk" not in autocomplete.content
    assert "globex-clerk" in admin_client.get(reverse("admin:auth_user_changelist")).content.decode()


def test_downloads_need_the_view_permission_on_exports(org: Organization, make_draft, local_connection) -> None:
    export = ERPExport.objects.create(draft=make_draft(), connection=local_connection, status="SENT",
                                      filename="x.json", payload=b"{}\n", sent_at=timezone.now(),
                                      ack_body={"status": "accepted"})
    downloader = staff(org, "download_payload")
    for name in ("payload", "answer"):
        assert downloader.get(reverse(f"admin:connectors_erpexport_{name}", args=[export.pk])).status_code == 403
    viewer = staff(org, "download_payload", "view_erpexport")
    assert viewer.get(reverse("admin:connectors_erpexport_payload", args=[export.pk])).status_code == 200


@pytest.mark.parametrize("dropzone", ["local"], indirect=True)
def test_erp_texts_are_clipped_in_events_and_pages_and_whole_in_the_download(
        dropzone: Dropzone, make_draft, admin_client: Client) -> None:
    draft = make_draft(status="PUSHED")
    export = ERPExport.objects.create(draft=draft, connection=dropzone.connection, status="SENT", filename="f.json",
                                      sent_at=timezone.now())
    long = "Ä" + "x" * 200_000
    dropzone.put_ack("error_f.json", json.dumps({"export_id": str(export.pk), "message": long, "errors": [
        {"code": "UNKNOWN_SKU", "message": long, "line_number": 1}]}).encode())
    polling.poll_connection(connection=ERPConnection.objects.get(), force=True)
    export.refresh_from_db()
    assert export.status == "REJECTED" and len(export.last_error) <= 5000
    assert all(len(e.message) <= 5000 for e in ConnectorEvent.objects.all())
    page = admin_client.get(reverse("admin:connectors_erpexport_change", args=[export.pk])).content.decode()
    assert len(page) < 150_000
    whole = admin_client.get(reverse("admin:connectors_erpexport_answer", args=[export.pk])).content.decode()
    assert long in whole  # the ERP's whole answer stays downloadable


@pytest.mark.parametrize("dropzone", ["local"], indirect=True)
def test_an_ack_name_with_a_control_character_is_filed_to_failed_with_the_reason(dropzone: Dropzone) -> None:
    name = "ack_order\x07bell.json"
    dropzone.put_ack(name, b'{"status": "accepted"}')
    report = polling.poll_connection(connection=ERPConnection.objects.get(), force=True)
    assert report.outcomes == {"malformed": 1}
    assert names(dropzone.failed) == [name] and names(dropzone.outbound) == []
    event = ConnectorEvent.objects.get(kind="ack_malformed")
    assert "control character" in event.message and "\x07" not in event.message and "\\x07" in event.message


def test_a_private_key_that_is_not_a_key_is_refused_at_save(make_connection, org: Organization) -> None:
    conn = make_connection(transport="sftp", host="erp.example.com", username="erp", export_path="/in",
                           ack_path="/out")
    form = ERPConnectionForm(data=form_data(conn, private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nnope\n"),
                             instance=conn)
    assert not form.is_valid()
    assert "private key" in str(form.errors["private_key"]).lower()


def test_a_key_locked_by_a_passphrase_needs_the_right_one(make_connection, org: Organization) -> None:
    from tests.servers.sshd import make_client_key

    key = make_client_key("ed25519", "openssh", "right passphrase")
    conn = make_connection(transport="sftp", host="erp.example.com", username="erp", export_path="/in",
                           ack_path="/out")
    wrong = ERPConnectionForm(data=form_data(conn, private_key=key.private_key, private_key_passphrase="wrong"),
                              instance=conn)
    assert not wrong.is_valid() and "passphrase" in str(wrong.errors).lower()
    right = ERPConnectionForm(data=form_data(conn, private_key=key.private_key,
                                             private_key_passphrase="right passphrase"), instance=conn)
    assert right.is_valid(), right.errors


def test_clearing_the_key_clears_its_public_line(make_connection, org: Organization, admin_client: Client) -> None:
    from connectors.services.keys import generate_key_pair

    conn = make_connection(transport="sftp", host="erp.example.com", username="erp", export_path="/in",
                           ack_path="/out")
    line = generate_key_pair(connection=conn, actor="admin")
    conn.refresh_from_db()
    assert conn.client_public_key == line
    url = reverse("admin:connectors_erpconnection_change", args=[conn.pk])
    admin_client.post(url, {**form_data(conn), "clear_private_key": "on"})
    conn.refresh_from_db()
    assert not conn.private_key and conn.client_public_key == ""
    assert line not in admin_client.get(url).content.decode()
