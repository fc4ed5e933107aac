"""Alerts: each condition mails once when it starts and once when it ends, to its own organization and the admins.

States come from the real pipeline where that is cheap (a delivery into a missing directory, a local
dropzone the ERP stops emptying, an ack file, a poll that works); host-key codes and poll failures, which
need a real server to happen, are set on the row.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection as db_connection
from django.test import override_settings
from django.utils import timezone

from connectors.inbound import polling
from connectors.models import AlertState, ConnectorEvent, ERPConnection, ERPExport
from connectors.outbound import pushing
from connectors.services import alerts, overrides
from connectors.transports import ErrorCode
from orderflow.models import DraftOrder, Organization
from tests.test_settings import DEV_KEYS, run_settings, settings_of

pytestmark = pytest.mark.usefixtures("sync_tasks")

ORG_EMAILS = ["buyer@acme.example", "it@acme.example"]
ADMIN = "ops@orderflow.example"
BASE = "https://orders.example.com"
PASSWORD = "correct-horse-battery-staple-9"


@pytest.fixture(autouse=True)
def alert_settings() -> Iterator[None]:
    with override_settings(ADMINS=[("Ops", ADMIN)], ORDERFLOW_BASE_URL=BASE, ALERT_POLL_FAILURES=3,
                           ALERT_INBOX_STALE_MINUTES=30, ALERT_DAILY_DIGEST=False, ACK_OVERDUE_AFTER_MINUTES=60,
                           EMAIL_SUBJECT_PREFIX="[orderflow] "):
        yield


@pytest.fixture(autouse=True)
def org_with_recipients(org: Organization) -> Organization:
    org.alert_emails = "buyer@acme.example,\nit@acme.example"
    org.save()
    return org


@pytest.fixture
def run(django_capture_on_commit_callbacks) -> Callable[[], list[mail.EmailMessage]]:
    """One run of the schedule (mails go out after commit); the mails it sent."""
    def run_once() -> list[mail.EmailMessage]:
        before = len(mail.outbox)
        with django_capture_on_commit_callbacks(execute=True):
            alerts.run_alerts()
        return mail.outbox[before:]

    return run_once


def push(drafts: list[DraftOrder], capture) -> None:
    with capture(execute=True):
        pushing.push_drafts(drafts=drafts)


def set_conn(conn: ERPConnection, **fields) -> None:
    ERPConnection.objects.filter(pk=conn.pk).update(**fields)


def only(mails: list[mail.EmailMessage]) -> mail.EmailMessage:
    assert len(mails) == 1, [m.subject for m in mails]
    return mails[0]


def assert_started(mails, subject_end: str) -> mail.EmailMessage:
    message = only(mails)
    assert message.subject == f"[orderflow] ACME Industrial GmbH / ERP local: {subject_end}"
    assert message.to == ORG_EMAILS and message.bcc == [ADMIN]
    assert message.extra_headers["Auto-Submitted"] == "auto-generated"
    return message


def assert_resolved(mails, subject_end: str) -> mail.EmailMessage:
    message = only(mails)
    assert message.subject == f"[orderflow] ACME Industrial GmbH / ERP local: {subject_end} - resolved"
    assert message.body.startswith("Resolved: ") and set(message.recipients()) == {*ORG_EMAILS, ADMIN}
    return message


def ack_file(dropzone: Path, export: ERPExport) -> None:
    body = {"export_id": str(export.id), "status": "accepted", "erp_order_number": "SO-1"}
    (dropzone / "outbound" / f"ack_{export.filename.removesuffix('.json')}.json").write_text(json.dumps(body))


def poll(conn: ERPConnection) -> polling.PollReport:
    report = polling.poll_connection(connection=ERPConnection.objects.get(pk=conn.pk), force=True)
    assert report is not None and not report.error, report
    return report


# -- 1: deliveries failing ----------------------------------------------------------------------------


def test_a_failed_delivery_alerts_once_and_resolves_once_when_pushed_again(
    make_draft, local_connection, run, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    set_conn(local_connection, export_path="/missing")
    push([make_draft()], capture)
    failed = ERPExport.objects.get()
    assert failed.status == "FAILED"

    message = assert_started(run(), "deliveries failing")
    assert "1 export(s) failed for good" in message.body and "PO-2026-0042" in message.body
    assert failed.last_error[:40] in message.body
    link = (f"{BASE}/admin/connectors/erpexport/?connection__id__exact={local_connection.pk}"
            "&status__exact=FAILED")
    assert link in message.body
    assert run() == [] and run() == []

    set_conn(local_connection, export_path="/dropzone/inbound")
    push([DraftOrder.objects.get()], capture)  # a new current export: the failed one is history
    assert ERPExport.objects.filter(status="SENT").count() == 1
    assert_resolved(run(), "deliveries failing")
    assert run() == []

    set_conn(local_connection, export_path="/missing")
    push([make_draft(order_number="PO-2")], capture)
    assert_started(run(), "deliveries failing")
    state = AlertState.objects.get(connection=local_connection, condition="delivery_failed")
    assert state.active and state.version == 3 and state.cleared_at and state.started_at > state.cleared_at


def test_a_failed_delivery_resolves_when_retried_or_cancelled(
    make_draft, local_connection, run, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    set_conn(local_connection, export_path="/missing")
    push([make_draft(), make_draft(order_number="PO-2")], capture)
    first, second = ERPExport.objects.order_by("draft__order_number")
    assert "2 export(s) failed for good" in assert_started(run(), "deliveries failing").body

    set_conn(local_connection, export_path="/dropzone/inbound")
    with capture(execute=True):
        overrides.retry_exports(exports=[first], actor="ops")
    assert ERPExport.objects.get(pk=first.pk).status == "SENT"
    assert run() == []  # one is still failed
    overrides.cancel_exports(exports=[second], actor="ops", reason="ordered by phone")
    assert_resolved(run(), "deliveries failing")


# -- 2: the server's key ------------------------------------------------------------------------------


def test_an_unknown_or_changed_host_key_alerts_once_and_resolves_when_a_fault_free_operation_clears_it(
    local_connection, run
) -> None:
    set_conn(local_connection, last_error_code=ErrorCode.HOST_KEY_UNKNOWN)
    message = assert_started(run(), "server host key unknown")
    assert "Test connection" in message.body
    assert f"{BASE}/admin/connectors/erpconnection/{local_connection.pk}/change/" in message.body
    assert run() == []
    set_conn(local_connection, last_error_code=ErrorCode.HOST_KEY_CHANGED)
    assert run() == []  # the same condition: the fix (pin the right key) is the same
    set_conn(local_connection, last_error_code=ErrorCode.TIMEOUT)
    assert run() == []  # a timeout before the key is checked again proves nothing either way

    set_conn(local_connection, last_error_code="")
    assert_resolved(run(), "server host key unknown")
    assert run() == []

    set_conn(local_connection, last_error_code=ErrorCode.HOST_KEY_CHANGED)
    assert "DIFFERENT from the pinned one" in assert_started(run(), "server host key CHANGED").body


def test_other_fault_codes_are_not_host_key_alerts(local_connection, run) -> None:
    set_conn(local_connection, last_error_code=ErrorCode.TIMEOUT)
    assert run() == []


# -- 3: acks overdue ----------------------------------------------------------------------------------


def test_overdue_acks_alert_once_and_resolve_when_the_ack_is_read(
    make_draft, local_connection, local_dropzone, run, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    push([make_draft()], capture)
    export = ERPExport.objects.get()
    assert export.status == "SENT"
    assert run() == []  # sent just now: not overdue
    ERPExport.objects.filter(pk=export.pk).update(sent_at=timezone.now() - timedelta(minutes=61))

    message = assert_started(run(), "acks overdue")
    assert "1 export(s) were delivered more than 60 min ago" in message.body
    assert f"?ack=overdue&connection__id__exact={local_connection.pk}" in message.body
    assert run() == []

    ack_file(local_dropzone, export)
    poll(local_connection)
    assert ERPExport.objects.get(pk=export.pk).status == "ACKED"
    assert_resolved(run(), "acks overdue")
    assert run() == []

    push([make_draft(order_number="PO-2")], capture)
    ERPExport.objects.filter(status="SENT").update(sent_at=timezone.now() - timedelta(hours=3))
    assert_started(run(), "acks overdue")


# -- 4: polling failing -------------------------------------------------------------------------------


def test_polling_alerts_at_the_threshold_and_resolves_only_when_a_poll_works(local_connection, run) -> None:
    set_conn(local_connection, poll_failures=2, last_poll_message="ERP: poll failed: connection refused")
    assert run() == []  # below ALERT_POLL_FAILURES
    set_conn(local_connection, poll_failures=3)
    message = assert_started(run(), "polling failing")
    assert "The last 3 polls" in message.body and "connection refused" in message.body
    assert f"?kind__exact=poll_failed&connection__id__exact={local_connection.pk}" in message.body
    set_conn(local_connection, poll_failures=7)
    assert run() == []
    set_conn(local_connection, poll_failures=1)  # a new failure count after a blip: still failing, no mail
    assert run() == []

    poll(local_connection)  # a poll that works puts the count back to 0
    assert ERPConnection.objects.get(pk=local_connection.pk).poll_failures == 0
    assert_resolved(run(), "polling failing")
    assert run() == []

    set_conn(local_connection, poll_failures=3)
    assert_started(run(), "polling failing")


# -- 5: the ERP stopped consuming ---------------------------------------------------------------------


def test_files_left_in_the_erps_inbox_alert_once_and_resolve_when_the_erp_takes_them(
    make_draft, local_connection, local_dropzone, run, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    push([make_draft()], django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    poll(local_connection)  # first seen now: not stale yet
    assert list(ERPConnection.objects.get(pk=local_connection.pk).inbox_seen) == [export.filename]
    assert run() == []

    # Seen first 31 minutes ago by our clock, and still there.
    set_conn(local_connection, inbox_seen={export.filename: time.time() - 31 * 60})
    poll(local_connection)
    message = assert_started(run(), "the ERP stopped consuming files")
    assert "1 of our file(s) have sat in the ERP's inbox (/dropzone/inbound) for over 30 min" in message.body
    assert export.filename in message.body
    assert run() == []

    (local_dropzone / "inbound" / export.filename).unlink()  # the ERP imports it
    poll(local_connection)  # polls look at the inbox once a minute, not every time
    assert run() == []
    set_conn(local_connection, inbox_checked_at=timezone.now() - timedelta(minutes=1))
    poll(local_connection)
    assert_resolved(run(), "the ERP stopped consuming files")
    assert run() == []

    set_conn(local_connection, inbox_seen={"other.json": time.time() - 45 * 60, "new.json": time.time()})
    assert "1 of our file(s)" in assert_started(run(), "the ERP stopped consuming files").body


def test_an_old_inbox_listing_after_a_failed_poll_does_not_start_the_inbox_alert(local_connection, run) -> None:
    set_conn(local_connection, inbox_seen={"a.json": time.time() - 3600}, last_poll_ok=False, poll_failures=1)
    assert run() == []  # we cannot see the inbox: the ERP may have taken the file
    set_conn(local_connection, last_poll_ok=True, poll_failures=0)
    assert_started(run(), "the ERP stopped consuming files")


# -- who gets what ------------------------------------------------------------------------------------


def test_each_organization_gets_only_its_own_alerts_and_the_admins_get_all(
    make_connection, local_connection, run
) -> None:
    other = Organization.objects.create(slug="globex", name="Globex", alert_emails="alerts@globex.example")
    globex = make_connection(organization=other, name="SAP")
    set_conn(local_connection, last_error_code=ErrorCode.HOST_KEY_UNKNOWN)
    set_conn(globex, poll_failures=4)

    sent = run()
    assert len(sent) == 2
    acme = only([m for m in sent if m.to == ORG_EMAILS])
    globex_mail = only([m for m in sent if m.to == ["alerts@globex.example"]])
    assert "ACME" in acme.subject and "host key" in acme.subject and "Globex" not in acme.body
    assert "Globex / SAP local: polling failing" in globex_mail.subject and "ACME" not in globex_mail.body
    assert acme.bcc == [ADMIN] and globex_mail.bcc == [ADMIN]


def test_without_organization_addresses_the_admins_alone_are_told(org, local_connection, run) -> None:
    Organization.objects.filter(pk=org.pk).update(alert_emails="")
    set_conn(local_connection, poll_failures=3)
    message = only(run())
    assert message.to == [ADMIN] and message.bcc == []


def test_without_any_recipient_the_state_still_changes_and_the_timeline_says_why(
    org, local_connection, run
) -> None:
    Organization.objects.filter(pk=org.pk).update(alert_emails="")
    set_conn(local_connection, poll_failures=3)
    with override_settings(ADMINS=[]):
        assert run() == []
    assert AlertState.objects.get(condition="poll_failing").active
    assert "no recipients" in ConnectorEvent.objects.get(kind="alert_started").message


def test_no_secret_reaches_a_mail_even_when_an_error_text_echoes_it(
    make_draft, make_connection, run, django_capture_on_commit_callbacks
) -> None:
    conn = make_connection(transport="local", export_path="/missing", ack_path="/dropzone/outbound",
                           password=PASSWORD)
    push([make_draft()], django_capture_on_commit_callbacks)
    # A library that puts the password in its error (ours never do): the mail masks it all the same.
    ERPExport.objects.update(last_error=f"login as erp with {PASSWORD} refused")
    set_conn(conn, last_error_code=ErrorCode.HOST_KEY_CHANGED, poll_failures=3,
             last_poll_message=f"poll failed: {PASSWORD}", inbox_seen={f"{PASSWORD}.json": time.time() - 3600})

    sent = run()
    assert len(sent) == 4
    for message in sent:
        assert PASSWORD not in message.subject and PASSWORD not in message.body
    assert sum("[secret removed]" in m.body for m in sent) == 3
    set_conn(conn, last_error_code="", poll_failures=0, inbox_seen={})
    resolved = run()
    assert len(resolved) == 3 and all(PASSWORD not in m.body for m in resolved)


def test_an_inactive_connection_with_nothing_in_flight_resolves_its_alerts(
    make_draft, local_connection, run, django_capture_on_commit_callbacks
) -> None:
    set_conn(local_connection, export_path="/missing")
    push([make_draft()], django_capture_on_commit_callbacks)
    assert_started(run(), "deliveries failing")
    set_conn(local_connection, is_active=False, poll_failures=5)
    message = assert_resolved(run(), "deliveries failing")
    assert "switched off and has nothing in flight" in message.body
    assert run() == []  # and its other faults do not alert either


def test_an_inactive_connection_still_awaiting_answers_keeps_alerting(
    make_draft, local_connection, run, django_capture_on_commit_callbacks
) -> None:
    push([make_draft()], django_capture_on_commit_callbacks)
    ERPExport.objects.update(sent_at=timezone.now() - timedelta(hours=2))
    set_conn(local_connection, is_active=False)
    assert_started(run(), "acks overdue")


def test_the_links_in_a_mail_open_the_filtered_admin_lists(
    admin_client, make_draft, local_connection, run, django_capture_on_commit_callbacks
) -> None:
    set_conn(local_connection, export_path="/missing", poll_failures=3)
    push([make_draft()], django_capture_on_commit_callbacks)
    links = [line.split()[-1] for m in run() for line in m.body.splitlines() if f"{BASE}/admin/" in line]
    assert len(links) >= 6
    for link in links:
        response = admin_client.get(link.removeprefix(BASE))
        assert response.status_code == 200, link
        assert "?e=1" not in response.request.get("QUERY_STRING", ""), link


# -- idempotent and safe when clusters race -----------------------------------------------------------


def test_evaluate_decides_without_writing(local_connection) -> None:
    set_conn(local_connection, poll_failures=3)
    conn = ERPConnection.objects.get(pk=local_connection.pk)
    first = alerts.evaluate(conn)
    assert [(t.condition, t.started, t.version) for t in first] == [("poll_failing", True, 0)]
    assert alerts.evaluate(conn) == first and not AlertState.objects.exists() and not mail.outbox


def test_a_run_deciding_on_a_stale_state_sends_nothing(local_connection, run, monkeypatch) -> None:
    """Cluster B evaluates, cluster A runs to the end, then B applies its (now stale) decision."""
    set_conn(local_connection, poll_failures=3)
    stale = alerts.evaluate(ERPConnection.objects.get(pk=local_connection.pk))
    assert len(run()) == 1
    monkeypatch.setattr(alerts, "evaluate", lambda connection: stale)
    assert run() == []
    set_conn(local_connection, poll_failures=0)
    monkeypatch.undo()
    assert len(run()) == 1  # resolved; the stale "started" still cannot apply
    monkeypatch.setattr(alerts, "evaluate", lambda connection: stale)
    assert run() == []
    assert AlertState.objects.get(condition="poll_failing").version == 2


@pytest.mark.django_db(transaction=True)
def test_two_runs_racing_in_threads_send_each_mail_once(local_connection, monkeypatch) -> None:
    set_conn(local_connection, poll_failures=3, last_error_code=ErrorCode.HOST_KEY_UNKNOWN)
    both_decided = threading.Barrier(2, timeout=20)
    real_evaluate = alerts.evaluate

    def evaluate_then_wait(connection: ERPConnection) -> list[alerts.Transition]:
        decided = real_evaluate(connection)
        both_decided.wait()  # both runs decide on the same state before either applies
        return decided

    monkeypatch.setattr(alerts, "evaluate", evaluate_then_wait)
    results: list[str] = []

    def cluster() -> None:
        try:
            results.append(alerts.run_alerts())
        finally:
            db_connection.close()

    threads = [threading.Thread(target=cluster) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and all("0 error(s)" in r for r in results), results
    assert sorted(m.subject.rsplit(": ", 1)[1] for m in mail.outbox) == ["polling failing", "server host key unknown"]
    assert ConnectorEvent.objects.filter(kind="alert_started").count() == 2


def test_a_run_out_of_time_leaves_the_rest_to_the_next_one(local_connection, run) -> None:
    set_conn(local_connection, poll_failures=3)
    summary = alerts.check_all(budget=-1)
    assert summary.out_of_time and summary.connections == 0 and not mail.outbox
    assert alerts.run_alerts() == ("1 connection(s) checked: 1 alert(s) started, 0 resolved, 0 digest(s), "
                                   "0 error(s)")


# -- failures of the mail server, the digest ----------------------------------------------------------


class RefusingBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        raise ConnectionRefusedError("mail server down")


def test_a_mail_server_failure_is_recorded_and_does_not_stop_the_run(local_connection, run) -> None:
    set_conn(local_connection, poll_failures=3)
    with override_settings(EMAIL_BACKEND="tests.test_alerts.RefusingBackend"):
        assert run() == []
    event = ConnectorEvent.objects.get(kind="alert_mail_failed")
    assert "polling failing" in event.message and "ConnectionRefusedError" in event.message
    assert AlertState.objects.get(condition="poll_failing").active  # sent at most once: not repeated
    assert run() == []


def test_the_daily_digest_lists_open_problems_once_a_day(local_connection, run) -> None:
    set_conn(local_connection, poll_failures=3, last_error_code=ErrorCode.HOST_KEY_UNKNOWN)
    assert len(run()) == 2
    with override_settings(ALERT_DAILY_DIGEST=True, ALERT_DIGEST_HOUR=0):
        assert run() == []  # started today: mailed already
        AlertState.objects.update(started_at=timezone.now() - timedelta(days=2))
        digest = only(run())
        assert digest.subject.endswith("daily digest: 2 problem(s) still open")
        assert "polling failing" in digest.body and "server host key unknown" in digest.body
        assert run() == []


# -- the recipients setting ---------------------------------------------------------------------------


def test_alert_emails_are_validated_and_parsed(org) -> None:
    org.alert_emails = "a@example.com, b@example.com\nA@example.com;\n\n"
    org.full_clean()
    assert org.alert_recipients() == ["a@example.com", "b@example.com"]
    org.alert_emails = "a@example.com, not an address"
    with pytest.raises(ValidationError, match="not an address"):
        org.full_clean()
    assert org.alert_recipients() == ["a@example.com"]  # a bad row still reaches the good addresses


def test_email_settings_come_from_the_environment() -> None:
    names = ("EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_USE_TLS", "ADMINS")
    dev = settings_of(*names, ORDERFLOW_ENV="dev", EMAIL_URL="", EMAIL_BACKEND="", ADMINS="", **DEV_KEYS)
    assert dev["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend" and dev["ADMINS"] == []
    prod = settings_of(*names, ORDERFLOW_ENV="production", EMAIL_URL="smtp+tls://bot:p%40ss@smtp.example.com:587",
                       EMAIL_BACKEND="", ADMINS="Ops Team <ops@example.com>, dev@example.com", **DEV_KEYS)
    assert prod["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert (prod["EMAIL_HOST"], prod["EMAIL_PORT"], prod["EMAIL_HOST_USER"], prod["EMAIL_USE_TLS"]) == (
        "smtp.example.com", 587, "bot", True)
    assert prod["ADMINS"] == [["Ops Team", "ops@example.com"], ["", "dev@example.com"]]
    bad = run_settings(ORDERFLOW_ENV="dev", ADMINS="ops at example", EMAIL_URL="", **DEV_KEYS)
    assert bad.returncode != 0 and "ADMINS has an entry that is not an e-mail address" in bad.stderr
