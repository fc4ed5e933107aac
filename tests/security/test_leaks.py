"""Issue 9: secrets never leak — logs (plain and JSON), events, exception texts, admin HTML (error pages and
failed saves included), command output, dumpdata, /metrics and the probes' bodies are all searched for the
secret values."""

from __future__ import annotations

import logging
from dataclasses import replace
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from connectors import forms as connector_forms
from connectors.inbound import polling
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from connectors.observability import metrics
from connectors.observability.logs import JSONFormatter
from connectors.outbound import delivery
from tests.fixtures.dropzones import connection_from

PASSWORD = "Leaky-Pw-8d1f3a"
PASSPHRASE = "leaky passphrase 77c2"


@pytest.fixture
def conn(org, sftp_settings, sftp_dir, sftp_client_keys) -> ERPConnection:
    """An SFTP connection whose password is wrong and whose key is protected and not authorized: it fails."""
    from tests.servers.sshd import make_client_key

    key = make_client_key("ed25519", "openssh", PASSPHRASE)  # never authorized on the server
    settings = replace(sftp_settings(), password=PASSWORD, private_key=key.private_key,
                       private_key_passphrase=PASSPHRASE)
    made = connection_from(settings, org, export_path=str(sftp_dir), ack_path=str(sftp_dir))
    made.key_text = key.private_key  # for the search below
    return made


def secrets_of(conn: ERPConnection) -> list[str]:
    body = [line for line in conn.key_text.splitlines() if line and "PRIVATE KEY" not in line]
    return [PASSWORD, PASSPHRASE, *body]


def test_no_secret_appears_anywhere(conn: ERPConnection, admin_client: Client, make_draft, caplog,
                                    capsys, settings) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, paramiko included
    texts: list[str] = []
    change = reverse("admin:connectors_erpconnection_change", args=[conn.pk])

    # Admin pages: the form, the list, a failed save with secrets typed, the test page.
    texts.append(admin_client.get(change).content.decode())
    texts.append(admin_client.get(reverse("admin:connectors_erpconnection_changelist")).content.decode())
    failed_save = admin_client.post(change, {"name": "", "transport": "sftp", "password": PASSWORD,
                                             "private_key_passphrase": PASSPHRASE, "private_key": conn.key_text})
    assert failed_save.status_code == 200 and "This field is required" in failed_save.content.decode()
    texts.append(failed_save.content.decode())
    texts.append(admin_client.post(reverse("admin:connectors_erpconnection_test", args=[conn.pk])).content.decode())
    # The filter oracle (issue 18): a lookup on a secret column is refused, never answered with rows or not.
    token = ERPConnection.objects.get(pk=conn.pk).password.token
    for lookup in ("password__regex", "password__startswith", "password"):
        probe = admin_client.get(reverse("admin:connectors_erpconnection_changelist"), {lookup: token[:8]})
        assert probe.status_code == 400, lookup
        texts.append(probe.content.decode())

    # A crash in the form under DEBUG=True: the technical 500 page must mask what was typed.
    settings.DEBUG = True
    original_clean = connector_forms.ERPConnectionForm.clean

    def crash(self):
        raise RuntimeError("boom")

    connector_forms.ERPConnectionForm.clean = crash
    try:
        client = Client(raise_request_exception=False)
        client.force_login(get_user_model().objects.get(username="admin"))
        page = client.post(change, {"name": "x", "password": PASSWORD, "private_key_passphrase": PASSPHRASE,
                                    "private_key": conn.key_text})
        assert page.status_code == 500
        texts.append(page.content.decode())

    finally:
        connector_forms.ERPConnectionForm.clean = original_clean
        settings.DEBUG = False

    # The pipeline: a delivery and a poll that fail to log in, as events, rows and logs.
    ERPExport.objects.create(draft=make_draft(), connection=conn, next_attempt_at=timezone.now())
    delivery.deliver_due_exports(connection=ERPConnection.objects.get())
    polling.poll_connection(connection=ERPConnection.objects.get(), force=True)
    texts += [e.message + repr(e.details) for e in ConnectorEvent.objects.all()]
    texts += [e.last_error for e in ERPExport.objects.all()]
    texts.append(ERPConnection.objects.get().last_poll_message)
    texts.append(repr(ERPConnection.objects.get().transport_settings()))
    texts.append(repr(conn.password) + str(conn.private_key))

    # Commands.
    for command in (["test_connection", str(conn.pk)], ["deliver_exports"], ["poll_acks"],
                    ["rotate_secret_keys"], ["dumpdata", "connectors"]):
        out = StringIO()
        try:
            call_command(*command, stdout=out, stderr=out)
        except (CommandError, SystemExit) as err:
            texts.append(str(err))
        texts.append(out.getvalue())
    texts.append(capsys.readouterr().out)
    texts += [r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "") for r in caplog.records]

    # Observability (issue 20): the metrics page, the probes' bodies, and every log record as a JSON line.
    metrics.forget()
    scraped = Client().get("/metrics").content.decode()
    assert f'connection="{conn.name}"' in scraped  # the failing connection is on the page
    texts += [scraped, Client().get("/readyz").content.decode(), Client().get("/healthz").content.decode()]
    texts += [JSONFormatter().format(r) for r in caplog.records]

    everything = "\n".join(texts)
    assert "gAAAA" in everything  # dumpdata did run: the ciphertext is there
    for secret in secrets_of(conn):
        assert secret not in everything, f"a secret leaked: {secret[:6]}…"
