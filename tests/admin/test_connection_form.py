"""Issue 11: a connection form that does not lose work, says which connection is active, makes key pairs."""

from __future__ import annotations

import re

from django.test import Client
from django.urls import reverse

from connectors.models import ConnectorEvent, ERPConnection
from tests.fixtures.dropzones import connection_from
from tests.servers.sshd import make_client_key

PASSWORD = "typed-once-Pw-42"


def data(conn: ERPConnection | None, org, **overrides: str) -> dict[str, str]:
    values = {
        "organization": str(org.pk), "name": conn.name if conn else "New ERP", "transport": "sftp",
        "host": "127.0.0.1", "port": "", "username": "erp", "host_key": "",
        "password": "", "private_key": "", "private_key_passphrase": "",
        "export_path": "/inbound", "ack_path": "/outbound", "processed_path": "", "failed_path": "",
        "temp_suffix": ".tmp", "min_ack_age_seconds": "10", "poll_interval_seconds": "60",
        "connect_timeout_seconds": "10", "operation_timeout_seconds": "30", "max_attempts": "8",
        "upload_channels": "2", "mapping": "{}",
    }
    values.update(overrides)
    return values


def test_a_typed_secret_survives_a_form_error(admin_client: Client, org) -> None:
    add = reverse("admin:connectors_erpconnection_add")
    key = make_client_key("ed25519").private_key
    page = admin_client.post(add, data(None, org, password=PASSWORD, private_key=key,
                                       temp_suffix="tmp"))  # the suffix is wrong: the form comes back
    html = page.content.decode()
    assert page.status_code == 200 and "The temp suffix must start with" in html
    assert PASSWORD not in html  # kept, but only as ciphertext
    assert "What you typed is kept (encrypted)" in html
    kept = dict(re.findall(r'name="(kept_[a-z_]+)" value="([^"]*)"', html))
    assert kept["kept_password"].startswith("gAAAA")
    # Sent again with the error fixed and the secret inputs left empty: the typed password is saved.
    admin_client.post(add, data(None, org, **kept))
    conn = ERPConnection.objects.get()
    assert conn.transport_settings().password == PASSWORD and conn.transport_settings().private_key == key


def test_a_kept_secret_is_bound_to_its_form(admin_client: Client, org, make_connection) -> None:
    other = make_connection(name="Other", transport="sftp", host="127.0.0.1", username="erp", is_active=False)
    add = reverse("admin:connectors_erpconnection_add")
    html = admin_client.post(add, data(None, org, password=PASSWORD, temp_suffix="tmp")).content.decode()
    token = re.search(r'name="kept_password" value="([^"]*)"', html).group(1)
    change = reverse("admin:connectors_erpconnection_change", args=[other.pk])
    admin_client.post(change, data(other, org, name="Other", kept_password=token))
    assert not ERPConnection.objects.get(pk=other.pk).password  # a token of another form counts for nothing


def test_the_conflict_names_the_active_connection(admin_client: Client, org, make_connection) -> None:
    make_connection(name="ERP sftp (the old one)")
    html = admin_client.post(reverse("admin:connectors_erpconnection_add"),
                             data(None, org, is_active="on", password="x")).content.decode()
    assert "already has an active connection: “ERP sftp (the old one)”" in html


def test_generate_key_pair_stores_the_private_half_and_shows_the_public(
    admin_client: Client, org, sftp_settings, sftp_dir, sshd_server,
) -> None:
    conn = connection_from(sftp_settings(), org, export_path=str(sftp_dir), ack_path=str(sftp_dir))
    ERPConnection.objects.filter(pk=conn.pk).update(private_key="", password="")
    url = reverse("admin:connectors_erpconnection_generate_key", args=[conn.pk])
    assert admin_client.get(url).status_code == 405
    html = admin_client.post(url, follow=True).content.decode()
    line = re.search(r'of-public-key">(ssh-ed25519 [^<]+)<', html).group(1)
    conn.refresh_from_db()
    assert conn.client_public_key == line and conn.private_key
    body = conn.private_key.reveal().splitlines()[1]
    assert body not in html  # the private half is shown nowhere
    assert ConnectorEvent.objects.filter(kind="key_pair_generated", actor="admin").exists()
    sshd_server.authorize(line)  # what the ERP's admin does with it
    result = admin_client.post(reverse("admin:connectors_erpconnection_test", args=[conn.pk])).content.decode()
    assert "Connection test passed" in result
