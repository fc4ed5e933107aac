"""Secrets are encrypted at rest, decrypted only for a transport, never rendered, dumped as ciphertext."""

from __future__ import annotations

import copy
import io
import json
import pickle
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection as db
from django.test import Client, override_settings
from django.urls import reverse

from connectors.crypto import Sealed, SecretDecryptionError, looks_like_token
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from tests.servers.sshd import make_client_key

PASSWORD = "s3cr3t-Pa55word!"
PASSPHRASE = "correct horse battery staple"
PRIVATE_KEY = make_client_key("ed25519").private_key  # a real key: the form parses what is typed (issue 18)


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
    assert (reloaded.password.reveal(), reloaded.private_key.reveal(), reloaded.private_key_passphrase.reveal()) == (
        PASSWORD, PRIVATE_KEY, PASSPHRASE)


def test_secrets_decrypt_after_key_rotation(secret_conn: ERPConnection, settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.FIELD_ENCRYPTION_KEYS]
    assert ERPConnection.objects.get(pk=secret_conn.pk).password.reveal() == PASSWORD


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
        "export_path": conn.export_path, "ack_path": conn.ack_path, "processed_path": "", "failed_path": "",
        "temp_suffix": ".tmp", "min_ack_age_seconds": "10", "poll_interval_seconds": "60",
        "connect_timeout_seconds": "10", "operation_timeout_seconds": "30", "max_attempts": "8", "upload_channels": "4",
        "mapping": "{}", "is_active": "on",
    }
    data.update(overrides)
    return data


def test_empty_secret_input_keeps_the_stored_value(admin_client: Client, secret_conn: ERPConnection) -> None:
    response = admin_client.post(change_url(secret_conn), form_data(secret_conn, name="renamed"))
    assert response.status_code == 302, response.content.decode()[:2000]
    conn = ERPConnection.objects.get(pk=secret_conn.pk)
    assert conn.name == "renamed"
    s = conn.transport_settings()
    assert (s.password, s.private_key, s.private_key_passphrase) == (PASSWORD, PRIVATE_KEY, PASSPHRASE)


def test_new_secret_replaces_and_clear_removes(admin_client: Client, secret_conn: ERPConnection) -> None:
    response = admin_client.post(
        change_url(secret_conn), form_data(secret_conn, password="new-one", clear_private_key_passphrase="on")
    )
    assert response.status_code == 302
    conn = ERPConnection.objects.get(pk=secret_conn.pk)
    assert conn.password.reveal() == "new-one"
    assert conn.private_key.reveal() == PRIVATE_KEY
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
    assert ERPConnection.objects.get(pk=secret_conn.pk).password.reveal() == PASSWORD


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


# --- loading never decrypts; a row the keys cannot read fails only where its secret is used ---

def raw_tokens(pk: int) -> tuple[str, str, str]:
    return tuple(raw_columns(pk))


def test_loading_gives_sealed_values_that_never_show_the_secret(secret_conn: ERPConnection) -> None:
    conn = ERPConnection.objects.get(pk=secret_conn.pk)
    for value in (conn.password, conn.private_key, conn.private_key_passphrase):
        assert isinstance(value, Sealed) and value
        text = f"{value!r} {value!s} {conn.__dict__!r}"
        assert PASSWORD not in text and PASSPHRASE not in text and "b3BlbnNzaC1rZXktdjEA" not in text
        assert value.token not in f"{value!r} {value!s}"
    assert conn.password == copy.deepcopy(conn.password) == pickle.loads(pickle.dumps(conn.password))
    with pytest.raises(AttributeError):
        conn.password.token = "x"  # immutable
    empty = ERPConnection.objects.create(organization=conn.organization, name="no secrets", transport="local")
    empty.refresh_from_db()
    assert empty.password == "" and not empty.password


def test_saving_keeps_the_stored_token_and_encrypts_new_plaintext_once(secret_conn: ERPConnection) -> None:
    before = raw_tokens(secret_conn.pk)
    conn = ERPConnection.objects.get(pk=secret_conn.pk)
    conn.name = "renamed"
    conn.full_clean()
    conn.save()
    assert raw_tokens(secret_conn.pk) == before  # a Sealed value goes back as it was, not re-encrypted
    conn.password = "brand-new-Pw1"
    conn.save()
    assert isinstance(conn.password, Sealed)  # after save the instance holds ciphertext only
    assert conn.password.token == raw_tokens(conn.pk)[0] and conn.password.reveal() == "brand-new-Pw1"
    conn.save()
    assert raw_tokens(conn.pk)[0] == conn.password.token


@pytest.fixture
def foreign_conn(secret_conn: ERPConnection, make_connection, make_draft) -> ERPConnection:
    """A second connection whose secrets were encrypted with a key that is no longer configured."""
    from orderflow.models import Organization

    other = Organization.objects.create(slug="other", name="Other GmbH")
    with override_settings(FIELD_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]):
        conn = make_connection(organization=other, name="Lost key", transport="sftp", host="127.0.0.1",
                               username="erp", password="lost-key-Pw1", private_key=PRIVATE_KEY,
                               export_path="/other/inbound", ack_path="/other/outbound")  # its own directories
    export = ERPExport.objects.create(draft=make_draft(organization=other), connection=conn)
    ConnectorEvent.objects.create(connection=conn, export=export, kind="test", message="an event")
    return conn


def test_an_unreadable_row_breaks_no_admin_page(admin_client: Client, foreign_conn: ERPConnection) -> None:
    for url in (reverse("admin:connectors_erpconnection_changelist"), change_url(foreign_conn),
                reverse("admin:connectors_erpexport_changelist"), reverse("admin:connectors_connectorevent_changelist"),
                reverse("admin:orderflow_draftorder_changelist")):
        response = admin_client.get(url)
        assert response.status_code == 200, url
    assert "A value is stored" in admin_client.get(change_url(foreign_conn)).content.decode()


def test_an_unreadable_secret_fails_only_its_own_transport_with_a_clear_error(
        secret_conn: ERPConnection, foreign_conn: ERPConnection) -> None:
    assert secret_conn.transport_settings().password == PASSWORD  # the other organization is unaffected
    conn = ERPConnection.objects.get(pk=foreign_conn.pk)  # loading works
    with pytest.raises(SecretDecryptionError) as caught:
        conn.transport_settings()
    message = str(caught.value)
    assert "FIELD_ENCRYPTION_KEYS" in message
    assert "lost-key-Pw1" not in message and conn.password.token not in message


def test_form_keeps_an_unreadable_secret_when_other_fields_change(foreign_conn: ERPConnection) -> None:
    from connectors.forms import ERPConnectionForm

    before = raw_tokens(foreign_conn.pk)
    conn = ERPConnection.objects.get(pk=foreign_conn.pk)
    form = ERPConnectionForm(data=form_data(conn, name="still lost"), instance=conn)
    assert form.is_valid(), form.errors
    form.save()
    assert ERPConnection.objects.get(pk=conn.pk).name == "still lost"
    assert raw_tokens(conn.pk) == before  # kept without ever being decrypted
    # Typing the secrets again heals the row.
    form = ERPConnectionForm(data=form_data(conn, password="typed-again-Pw1", private_key=PRIVATE_KEY), instance=conn)
    assert form.is_valid(), form.errors
    form.save()
    assert ERPConnection.objects.get(pk=conn.pk).transport_settings().password == "typed-again-Pw1"


def test_admin_save_and_test_of_an_unreadable_row(admin_client: Client, foreign_conn: ERPConnection) -> None:
    # Saving never touches the network (nor the secret); the test page reports the unreadable secret.
    response = admin_client.post(change_url(foreign_conn), form_data(foreign_conn, name="still lost"), follow=True)
    assert response.status_code == 200 and "Test the connection" in response.content.decode()
    assert not ConnectorEvent.objects.filter(connection=foreign_conn, kind="connection_test").exists()
    test_url = reverse("admin:connectors_erpconnection_test", args=[foreign_conn.pk])
    html = admin_client.post(test_url).content.decode()
    assert "cannot be decrypted" in html and "lost-key-Pw1" not in html
    event = ConnectorEvent.objects.filter(connection=foreign_conn, kind="connection_test").get()
    assert event.level == "error" and "cannot be decrypted" in event.message


def test_delivery_records_an_unreadable_secret_as_a_permanent_fault(foreign_conn: ERPConnection) -> None:
    from connectors.outbound.delivery import deliver_due_exports

    export = ERPExport.objects.get(connection=foreign_conn)
    ERPExport.objects.filter(pk=export.pk).update(next_attempt_at=None)
    report = deliver_due_exports(connection=ERPConnection.objects.get(pk=foreign_conn.pk))
    export.refresh_from_db()
    assert export.status == ERPExport.Status.FAILED, report
    assert "cannot be decrypted" in export.last_error and "lost-key-Pw1" not in export.last_error


def test_polling_records_an_unreadable_secret_on_the_connection(foreign_conn: ERPConnection) -> None:
    from connectors.inbound.polling import poll_connection

    report = poll_connection(connection=ERPConnection.objects.get(pk=foreign_conn.pk), force=True)
    assert report is not None and "cannot be decrypted" in report.error
    conn = ERPConnection.objects.get(pk=foreign_conn.pk)
    assert conn.last_poll_ok is False and "lost-key-Pw1" not in conn.last_poll_message


# --- dumpdata writes ciphertext; loaddata restores it without a second encryption ---

def test_dumpdata_writes_ciphertext_and_loaddata_restores_it(secret_conn: ERPConnection, tmp_path: Path) -> None:
    before = raw_tokens(secret_conn.pk)
    out = io.StringIO()
    call_command("dumpdata", "connectors.erpconnection", "--indent", "2", stdout=out)
    dumped = out.getvalue()
    assert PASSWORD not in dumped and PASSPHRASE not in dumped and "b3BlbnNzaC1rZXktdjEA" not in dumped
    assert "Sealed" not in dumped
    fields = json.loads(dumped)[0]["fields"]
    assert (fields["password"], fields["private_key"], fields["private_key_passphrase"]) == before

    fixture = tmp_path / "connections.json"
    fixture.write_text(dumped, encoding="utf-8")
    ERPConnection.objects.filter(pk=secret_conn.pk).delete()
    call_command("loaddata", str(fixture), verbosity=0)
    assert raw_tokens(secret_conn.pk) == before  # not encrypted a second time
    s = ERPConnection.objects.get(pk=secret_conn.pk).transport_settings()
    assert (s.password, s.private_key, s.private_key_passphrase) == (PASSWORD, PRIVATE_KEY, PASSPHRASE)


@pytest.mark.parametrize("fmt", ["xml", "jsonl"])
def test_other_serializers_round_trip_too(secret_conn: ERPConnection, tmp_path: Path, fmt: str) -> None:
    before = raw_tokens(secret_conn.pk)
    fixture = tmp_path / f"connections.{fmt}"
    call_command("dumpdata", "connectors.erpconnection", "--format", fmt, "--output", str(fixture))
    assert PASSWORD not in fixture.read_text(encoding="utf-8")
    ERPConnection.objects.filter(pk=secret_conn.pk).delete()
    call_command("loaddata", str(fixture), verbosity=0)
    assert raw_tokens(secret_conn.pk) == before


def test_loaddata_encrypts_a_hand_written_plaintext_secret(org, tmp_path: Path) -> None:
    fixture = tmp_path / "plain.json"
    fixture.write_text(json.dumps([{"model": "connectors.erpconnection", "pk": 77, "fields": {
        "organization": org.pk, "name": "hand written", "transport": "sftp", "host": "h", "username": "u",
        "password": PASSWORD, "private_key": "", "private_key_passphrase": "",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}}]), encoding="utf-8")
    call_command("loaddata", str(fixture), verbosity=0)
    stored = raw_tokens(77)[0]
    assert looks_like_token(stored) and PASSWORD not in stored
    assert ERPConnection.objects.get(pk=77).transport_settings().password == PASSWORD


def test_token_shape_is_recognised_without_keys() -> None:
    token = Fernet(Fernet.generate_key()).encrypt(b"x").decode()
    assert looks_like_token(token)
    for not_a_token in ("", PASSWORD, "gAAAAA", token[:-4], token + "!", " " + token, "gAAAA" + "A" * 95):
        assert not looks_like_token(not_a_token), not_a_token
