"""Test connection on the real servers: steps, failures, host-key pinning, admin pages, command."""

from __future__ import annotations

import re

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from connectors.models import ConnectorEvent, ERPConnection
from connectors.services.connection_test import test_connection as run_test
from tests.fixtures.dropzones import Dropzone, repoint


def step_names(result) -> list[str]:
    return [s.name for s in result.steps]


def test_all_steps_pass_and_are_recorded(dropzone: Dropzone) -> None:
    result = run_test(connection=dropzone.connection)
    assert result.ok, result.error
    names = step_names(result)
    assert any(n.startswith("Export dir") for n in names) and any(n.startswith("Ack dir") for n in names)
    assert "Processed and failed dirs" in names and "Rename semantics" in names
    assert all(s.ok and s.seconds >= 0 for s in result.steps)
    assert dropzone.processed.is_dir() and dropzone.failed.is_dir()
    assert list(dropzone.inbound.iterdir()) == []  # the probe files are gone
    event = ConnectorEvent.objects.get(kind="connection_test")
    assert event.level == "info" and len(event.details["steps"]) == len(result.steps)


def test_remote_steps_include_tcp_and_auth(remote_dropzone: Dropzone) -> None:
    result = run_test(connection=remote_dropzone.connection)
    assert result.ok, result.error
    names = step_names(result)
    assert names[0] == "TCP connect" and "Authentication" in names
    rename = next(s for s in result.steps if s.name == "Rename semantics")
    expected = "replaces" if remote_dropzone.kind == "ftp" else "refuses"
    assert expected in rename.detail


def test_wrong_password_fails_at_authentication(remote_dropzone: Dropzone) -> None:
    conn = ERPConnection.objects.get()
    conn.private_key = ""
    conn.password = "definitely-wrong-Pw1"
    conn.save()
    result = run_test(connection=conn)
    assert not result.ok
    assert result.steps[-1].name == "Authentication" and not result.steps[-1].ok
    assert "definitely-wrong-Pw1" not in result.error
    assert ConnectorEvent.objects.get(kind="connection_test").level == "error"


def test_unknown_then_changed_host_key_and_pinning(sshd_server, sshd_factory, sftp_settings, sftp_dir, org,
                                                   admin_client) -> None:
    from tests.fixtures.dropzones import connection_from

    settings = sftp_settings(host_key="")
    conn = connection_from(settings, org, export_path=str(sftp_dir), ack_path=str(sftp_dir))
    url = reverse("admin:connectors_erpconnection_test", args=[conn.pk])
    assert "has not been tested yet" in admin_client.get(url).content.decode()  # a GET touches nothing
    html = admin_client.post(url).content.decode()
    assert "No host key is pinned yet" in html and "Trust and pin this key" in html
    assert "SHA256:" in html
    event = re.search(r'name="event" value="(\d+)"', html).group(1)

    pin = reverse("admin:connectors_erpconnection_pin_host_key", args=[conn.pk])
    # The browser never names the key: a key posted by hand is ignored, only the test's own record counts.
    admin_client.post(pin, {"host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOsomebodyelse"}, follow=True)
    conn.refresh_from_db()
    assert conn.host_key == ""
    response = admin_client.post(pin, {"event": event}, follow=True)
    assert "Key pinned" in response.content.decode()
    conn.refresh_from_db()
    assert conn.host_key.split()[:2] == sshd_server.host_keys["ed25519"].split()[:2]
    pinned = ConnectorEvent.objects.get(kind="host_key_pinned")
    assert pinned.actor == "admin" and "SHA256:" in pinned.message
    assert "Connection test passed" in admin_client.post(url).content.decode()

    other = sshd_factory()  # same users and dirs would differ; only the key matters here
    repoint(conn, port=other.port)
    html = admin_client.post(url).content.decode()
    assert "has CHANGED" in html and html.count("SHA256:") >= 2


def test_pinning_needs_change_permission(dropzone: Dropzone, client, django_user_model) -> None:
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw-Viewer-1", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_erpconnection"))
    dropzone.connection.organization.members.add(viewer)
    client.force_login(viewer)
    assert client.get(reverse("admin:connectors_erpconnection_test", args=[dropzone.connection.pk])).status_code == 200
    response = client.post(reverse("admin:connectors_erpconnection_pin_host_key", args=[dropzone.connection.pk]),
                           {"event": "1"})
    assert response.status_code == 403
    assert ERPConnection.objects.get().host_key == dropzone.connection.host_key


def test_change_page_has_a_test_button_and_the_action_runs_the_test(dropzone: Dropzone, admin_client) -> None:
    change = reverse("admin:connectors_erpconnection_change", args=[dropzone.connection.pk])
    html = admin_client.get(change).content.decode()
    assert reverse("admin:connectors_erpconnection_test", args=[dropzone.connection.pk]) in html
    response = admin_client.post(reverse("admin:connectors_erpconnection_changelist"),
                                 {"action": "run_connection_test", "_selected_action": [dropzone.connection.pk]},
                                 follow=True)
    assert "Connection test passed" in response.content.decode()


def test_command_prints_steps_and_fails_on_error(dropzone: Dropzone, capsys) -> None:
    call_command("test_connection", str(dropzone.connection.pk))
    out = capsys.readouterr().out
    assert "Connection test passed" in out and "Rename semantics" in out
    ERPConnection.objects.filter(pk=dropzone.connection.pk).update(export_path="/nonexistent-dir/inbound")
    with pytest.raises(CommandError, match="Connection test failed"):
        call_command("test_connection", dropzone.connection.name)
    assert "FAIL" in capsys.readouterr().out
