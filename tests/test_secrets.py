"""Secrets are encrypted at rest and never rendered in the admin."""

from __future__ import annotations

import pytest
from django.db import connection as db
from django.test import Client
from django.urls import reverse

from connectors.models import ERPConnection

PASSWORD = "s3cr3t-Pa55word!"
PASSPHRASE = "correct horse battery staple"
PRIVATE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
               "-----END OPENSSH PRIVATE KEY-----")


@pytest.fixture
def secret_conn(make_connection) -> ERPConnection:
    return make_connection(
        transport="sftp", host="127.0.0.1", username="erp", password=PASSWORD,
        private_key=PRIVATE_KEY, private_key_passphrase=PASSPHRASE,
    )


def raw_columns(pk: int) -> tuple[str, str, str]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT password, private_key, private_key_passphrase FROM connectors_erpconnection WHERE id = %s", [pk]
        )
        return cur.fetchone()


def test_database_holds_ciphertext_only(secret_conn: ERPConnection) -> None:
    raw = raw_columns(secret_conn.pk)
    for stored, plain in zip(raw, (PASSWORD, PRIVATE_KEY, PASSPHRASE), strict=False):
        assert stored and plain not in stored
        assert stored.startswith("gAAAA")  # a Fernet token
    reloaded = ERPConnection.objects.get(pk=secret_conn.pk)
    assert (reloaded.password, reloaded.private_key, reloaded.private_key_passphrase) == (
        PASSWORD, PRIVATE_KEY, PASSPHRASE)


def test_secrets_decrypt_after_key_rotation(secret_conn: ERPConnection, settings) -> None:
    from cryptography.fernet import Fernet

    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.FIELD_ENCRYPTION_KEYS]
    assert ERPConnection.objects.get(pk=secret_conn.pk).password == PASSWORD


def test_settings_repr_hides_secrets(secret_conn: ERPConnection) -> None:
    text = repr(secret_conn.transport_settings())
    assert PASSWORD not in text and PASSPHRASE not in text and "PRIVATE KEY" not in text


def change_url(conn: ERPConnection) -> str:
    return reverse("admin:connectors_erpconnection_change", args=[conn.pk])


def test_admin_pages_never_show_secrets(admin_client: Client, secret_conn: ERPConnection) -> None:
    for url in (change_url(secret_conn), reverse("admin:connectors_erpconnection_changelist")):
        html = admin_client.get(url).content.decode()
        assert PASSWORD not in html and PASSPHRASE not in html and "b3BlbnNzaC1rZXktdjEA" not in html
    html = admin_client.get(change_url(secret_conn)).content.decode()
    assert "A value is stored" in html


def form_data(conn: ERPConnection, **overrides: str) -> dict[str, str]:
    data = {
        "organization": str(conn.organization_id), "name": conn.name, "transport": conn.transport,
        "host": conn.host, "port": "", "username": conn.username, "host_key": "",
        "password": "", "private_key": "", "private_key_passphrase": "",
        "export_path": "/inbound", "ack_path": "/outbound", "processed_path": "", "failed_path": "",
        "temp_suffix": ".tmp", "min_ack_age_seconds": "10", "poll_interval_seconds": "60",
        "connect_timeout_seconds": "10", "operation_timeout_seconds": "30", "max_attempts": "8", "upload_channels": "2",
        "mapping": "{}", "is_active": "on",
    }
    data.update(overrides)
    return data


def test_empty_secret_input_keeps_the_stored_value(admin_client: Client, secret_conn: ERPConnection) -> None:
    response = admin_client.post(change_url(secret_conn), form_data(secret_conn, name="renamed"))
    assert response.status_code == 302, response.content.decode()[:2000]
    conn = ERPConnection.objects.get(pk=secret_conn.pk)
    assert conn.name == "renamed"
    assert (conn.password, conn.private_key, conn.private_key_passphrase) == (PASSWORD, PRIVATE_KEY, PASSPHRASE)


def test_new_secret_replaces_and_clear_removes(admin_client: Client, secret_conn: ERPConnection) -> None:
    response = admin_client.post(
        change_url(secret_conn), form_data(secret_conn, password="new-one", clear_private_key_passphrase="on")
    )
    assert response.status_code == 302
    conn = ERPConnection.objects.get(pk=secret_conn.pk)
    assert conn.password == "new-one"
    assert conn.private_key == PRIVATE_KEY
    assert conn.private_key_passphrase == ""


def test_form_error_page_does_not_echo_typed_secrets(admin_client: Client, secret_conn: ERPConnection) -> None:
    response = admin_client.post(
        change_url(secret_conn),
        form_data(secret_conn, password="typed-Secret-1", private_key="typed-key-material", temp_suffix="bad"),
    )
    assert response.status_code == 200  # the form came back with an error
    html = response.content.decode()
    assert "temp suffix must start" in html
    assert "typed-Secret-1" not in html and "typed-key-material" not in html
    assert ERPConnection.objects.get(pk=secret_conn.pk).password == PASSWORD


def test_invalid_mapping_is_refused_with_reasons(admin_client: Client, secret_conn: ERPConnection) -> None:
    response = admin_client.post(change_url(secret_conn),
                                 form_data(secret_conn, mapping='{"drop": ["export_id"], "frobnicate": 1}'))
    assert response.status_code == 200
    html = response.content.decode()
    assert "export_id" in html and "frobnicate" in html
    assert ERPConnection.objects.get(pk=secret_conn.pk).mapping == {}


def test_mapping_preview_shows_the_mapped_document(admin_client: Client, secret_conn: ERPConnection,
                                                   make_draft) -> None:
    make_draft()
    secret_conn.mapping = {"add": {"sender": "orderflow-preview"}, "drop": ["order.notes"]}
    secret_conn.save()
    html = admin_client.get(change_url(secret_conn)).content.decode()
    assert "orderflow-preview" in html and "_acme_PO-2026-0042_00000000.json" in html
