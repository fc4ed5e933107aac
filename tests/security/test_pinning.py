"""Issue 18, finding 2: pinned keys change only through pinning.

A user with change permission but without ``pin_host_key`` added a second line to the pinned host keys in the
change form; the save kept the stored secrets ("only keys added"), so a server presenting that key on the same
host and port received the password at the next poll.  Here the tests' real sshd has several host keys: the
second one plays the server an attacker controls.
"""

from __future__ import annotations

from collections.abc import Callable
from html import unescape

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from connectors.models import ConnectorEvent, ERPConnection
from connectors.services.connection_test import pin_host_key, test_connection
from tests.fixtures.dropzones import connection_from
from tests.security.test_lure import form


def member(org, *perms: str) -> Client:
    user = User.objects.create_user(f"user-{len(perms)}", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=[
        "view_erpconnection", "change_erpconnection", "test_connection", *perms]))
    org.members.add(user)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def conn(org, sftp_settings: Callable, sftp_dir) -> ERPConnection:
    return connection_from(sftp_settings(password="Pinned-Pw-19a4"), org, export_path=str(sftp_dir),
                           ack_path=str(sftp_dir))


def test_without_the_pin_permission_the_pinned_keys_are_read_only(org, conn: ERPConnection, sshd_server) -> None:
    client = member(org)
    url = reverse("admin:connectors_erpconnection_change", args=[conn.pk])
    html = client.get(url).content.decode()
    assert 'name="host_key"' not in html and conn.host_key.split()[1][:20] in html  # shown, not editable
    second = f"{conn.host_key}\n{sshd_server.host_keys['rsa']}"
    client.post(url, form(conn, host_key=second, upload_channels="4"))
    saved = ERPConnection.objects.get(pk=conn.pk)
    assert saved.host_key == conn.host_key  # the added line was ignored
    assert saved.transport_settings().password == "Pinned-Pw-19a4"


def test_a_pasted_key_requires_the_secrets_again(org, conn: ERPConnection, sshd_server) -> None:
    client = member(org, "pin_host_key")
    url = reverse("admin:connectors_erpconnection_change", args=[conn.pk])
    assert 'name="host_key"' in client.get(url).content.decode()
    second = f"{conn.host_key}\n{sshd_server.host_keys['rsa']}"  # "only" added, as for a rotation
    response = client.post(url, form(conn, host_key=second, upload_channels="4"), follow=True)
    saved = ERPConnection.objects.get(pk=conn.pk)
    assert saved.host_key == second and not saved.password and not saved.private_key
    assert "were cleared: type them again" in response.content.decode()


def test_a_key_the_server_presented_is_pinned_with_who_and_when_and_a_first_pin_keeps_the_secrets(
        org, sftp_settings: Callable, sftp_dir, sshd_server) -> None:
    conn = connection_from(sftp_settings(host_key="", password="First-Pin-Pw"), org, export_path=str(sftp_dir),
                           ack_path=str(sftp_dir))
    result = test_connection(connection=conn, actor="alice")
    assert result.host_key_error is not None
    pin_host_key(connection=conn, host_key=result.host_key_error.presented_key, user="alice")
    saved = ERPConnection.objects.get(pk=conn.pk)
    assert saved.host_key == sshd_server.host_keys["ed25519"].rsplit(" ", 1)[0] or saved.host_key.startswith(
        "ssh-ed25519 ")
    assert saved.transport_settings().password == "First-Pin-Pw"  # the first pin completes the endpoint
    event = ConnectorEvent.objects.get(kind="host_key_pinned")
    assert event.actor == "alice" and "pinned the server's key SHA256:" in event.message


def test_a_plain_save_that_adds_a_key_clears_the_secrets(conn: ERPConnection, sshd_server) -> None:
    """The rule is the model's, not only the form's: code or a shell pinning by hand types the secrets again."""
    conn.host_key = f"{conn.host_key}\n{sshd_server.host_keys['ecdsa']}"
    conn.save()
    assert not ERPConnection.objects.get(pk=conn.pk).password


def test_the_ftps_page_says_which_check_applies(org, admin_client: Client, ftps_settings: Callable) -> None:
    """Adding a first pin switches FTPS from the CA store to the pin alone: never silently."""
    conn = connection_from(ftps_settings(host_key=""), org, export_path="/", ack_path="/")
    url = reverse("admin:connectors_erpconnection_change", args=[conn.pk])
    assert "checked against the system's certificate authorities" in unescape(admin_client.get(url).content.decode())
    ERPConnection.objects.filter(pk=conn.pk).update(host_key=ftps_settings().host_key)
    html = unescape(admin_client.get(url).content.decode())
    assert "only the pinned certificate is accepted; the certificate authorities are not asked" in html
