"""Issue 8's faults, one test each, through what staff and the pipeline do (admin actions, services, files).

Each was written to fail on the code before the lifecycle module existed.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from connectors.inbound import polling
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from connectors.outbound import delivery, pushing
from connectors.tasks import sweep
from connectors.transports.local import LocalTransport
from connectors.work.engine import Engine
from orderflow.models import DraftOrder
from tests.fixtures.dropzones import names

pytestmark = pytest.mark.usefixtures("sync_tasks")


def push(drafts, capture) -> None:
    with capture(execute=True):
        pushing.push_drafts(drafts=drafts)


def ack_file(dropzone: Path, export: ERPExport, *, number: str = "SO-1", kind: str = "ack") -> Path:
    body = {"export_id": str(export.id), "status": "accepted" if kind == "ack" else "rejected"}
    body.update({"erp_order_number": number} if kind == "ack" else {"errors": [{"message": "no such SKU"}]})
    path = dropzone / "outbound" / f"{kind}_{export.filename.removesuffix('.json')}.json"
    path.write_text(json.dumps(body))
    return path


def poll(connection: ERPConnection) -> polling.PollReport:
    report = polling.poll_connection(connection=ERPConnection.objects.get(pk=connection.pk), force=True)
    assert report is not None
    return report


def admin_action(client, model: str, action: str, pks, capture, **data):
    with capture(execute=True):
        return client.post(reverse(f"admin:{model}_changelist"),
                           {"action": action, "_selected_action": [str(pk) for pk in pks], **data}, follow=True)


# -- 1: a stale retry sends an order twice ---------------------------------------------


def test_retrying_a_replaced_export_sends_nothing_and_keeps_the_confirmation(
    admin_client, make_draft, local_connection, local_dropzone, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    draft = make_draft()
    ERPConnection.objects.filter(pk=local_connection.pk).update(export_path="/missing")
    push([draft], capture)
    first = ERPExport.objects.get()
    assert first.status == "FAILED" and DraftOrder.objects.get().status == "PUSH_FAILED"

    ERPConnection.objects.filter(pk=local_connection.pk).update(export_path="/dropzone/inbound")
    push([DraftOrder.objects.get()], capture)
    second = ERPExport.objects.exclude(pk=first.pk).get()
    ack_file(local_dropzone, second, number="SO-1")
    poll(local_connection)
    assert DraftOrder.objects.get().status == "CONFIRMED"

    response = admin_action(admin_client, "connectors_erpexport", "retry_delivery", [first.pk], capture)
    assert "0 export(s) queued for delivery again" in response.content.decode()
    assert "a newer export of the same draft exists" in response.content.decode()
    draft = DraftOrder.objects.get()
    assert draft.status == "CONFIRMED" and draft.erp_order_id == "SO-1"
    assert names(local_dropzone / "inbound") == [second.filename]  # one file for the order
    assert ERPExport.objects.get(pk=first.pk).status == "FAILED"


def test_a_late_answer_to_an_older_export_is_recorded_on_it_and_leaves_the_draft(
    make_draft, local_connection, local_dropzone, django_capture_on_commit_callbacks
) -> None:
    """We gave up on E1, but its file had landed; the ERP answers it after E2 was confirmed."""
    capture = django_capture_on_commit_callbacks
    draft = make_draft()
    ERPConnection.objects.filter(pk=local_connection.pk).update(export_path="/missing")
    push([draft], capture)
    first = ERPExport.objects.get()
    first.filename = "20261126T120501Z_acme_PO-2026-0042_aaaaaaaa.json"
    first.save()
    ERPConnection.objects.filter(pk=local_connection.pk).update(export_path="/dropzone/inbound")
    push([DraftOrder.objects.get()], capture)
    second = ERPExport.objects.exclude(pk=first.pk).get()
    ack_file(local_dropzone, second, number="SO-2")
    poll(local_connection)
    ack_file(local_dropzone, first, kind="error")
    assert poll(local_connection).outcomes == {"rejected": 1}
    draft = DraftOrder.objects.get()
    assert draft.status == "CONFIRMED" and draft.erp_order_id == "SO-2"
    assert ERPExport.objects.get(pk=first.pk).status == "REJECTED"
    event = ConnectorEvent.objects.get(kind="ack_rejected")
    assert event.level == "warning" and "the draft follows a newer one" in event.message


# -- 2: push is one transaction ------------------------------------------------------------


def test_a_push_that_fails_halfway_leaves_the_draft_pushable(make_draft, local_connection, monkeypatch,
                                                             django_capture_on_commit_callbacks) -> None:
    draft = make_draft()

    def database_gone(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(ERPExport.objects, "bulk_create", database_gone)
    monkeypatch.setattr(ERPExport.objects, "create", database_gone)
    with pytest.raises(RuntimeError):
        push([draft], django_capture_on_commit_callbacks)
    assert DraftOrder.objects.get().status == "NEW" and not ERPExport.objects.exists()


def test_an_approval_saved_outside_the_services_is_recovered_by_the_schedule(
    make_draft, local_connection, local_dropzone, django_capture_on_commit_callbacks
) -> None:
    """Another app set APPROVED with a queryset update (no signal): the minute's sweep pushes it."""
    draft = make_draft()
    DraftOrder.objects.filter(pk=draft.pk).update(status=DraftOrder.Status.APPROVED)
    with django_capture_on_commit_callbacks(execute=True):
        sweep()
    export = ERPExport.objects.get()
    assert export.status == "SENT" and DraftOrder.objects.get().status == "PUSHED"
    assert names(local_dropzone / "inbound") == [export.filename]


# -- 3: the signal decides from the database --------------------------------------------


def test_a_refreshed_instance_saved_as_approved_gets_its_export(make_draft, local_connection,
                                                                django_capture_on_commit_callbacks) -> None:
    capture = django_capture_on_commit_callbacks
    ERPConnection.objects.filter(pk=local_connection.pk).update(export_path="/missing")
    draft = make_draft()
    with capture(execute=True):
        draft.status = DraftOrder.Status.APPROVED
        draft.save()
    assert draft.exports.get().status == "FAILED"
    ERPConnection.objects.filter(pk=local_connection.pk).update(export_path="/dropzone/inbound")
    draft.refresh_from_db()
    assert draft.status == "PUSH_FAILED"
    with capture(execute=True):
        draft.status = DraftOrder.Status.APPROVED
        draft.save()
    assert draft.exports.count() == 2 and draft.exports.filter(status="SENT").count() == 1
    assert DraftOrder.objects.get().status == "PUSHED"


def test_a_stale_save_never_approves_a_delivered_draft_again(make_draft, local_connection,
                                                             django_capture_on_commit_callbacks) -> None:
    draft = make_draft()
    stale = DraftOrder.objects.get(pk=draft.pk)
    push([draft], django_capture_on_commit_callbacks)
    assert DraftOrder.objects.get().status == "PUSHED"
    stale.status = DraftOrder.Status.APPROVED  # an old copy, saved by code outside the services
    with django_capture_on_commit_callbacks(execute=True):
        stale.save()
    assert ERPExport.objects.count() == 1
    assert DraftOrder.objects.get().status == "PUSHED"
    assert ConnectorEvent.objects.filter(kind="draft_status_restored").exists()


# -- 4: a replaced connection keeps being read -------------------------------------------


def test_answers_for_a_replaced_connection_are_still_read(
    admin_client, make_draft, make_connection, local_connection, local_dropzone, tmp_path,
    django_capture_on_commit_callbacks,
) -> None:
    capture = django_capture_on_commit_callbacks
    push([make_draft()], capture)
    export = ERPExport.objects.get()
    assert export.status == "SENT"
    # The setup guide's switch: deactivate the old connection, activate the new one.
    ERPConnection.objects.filter(pk=local_connection.pk).update(is_active=False)
    (tmp_path / "new" / "inbound").mkdir(parents=True)
    (tmp_path / "new" / "outbound").mkdir()
    new = make_connection(name="new ERP", export_path="/new/inbound", ack_path="/new/outbound",
                          min_ack_age_seconds=0)
    html = admin_client.get(reverse("admin:connectors_erpconnection_changelist")).content.decode()
    assert "draining (1 awaiting an answer)" in html

    ack_file(local_dropzone, export, number="SO-9")
    ERPConnection.objects.update(next_poll_at=None)
    Engine(inline=True).round()  # the engine polls every pollable connection that is due, draining ones too
    draft = DraftOrder.objects.get()
    assert draft.status == "CONFIRMED" and draft.erp_order_id == "SO-9"
    # New exports go only to the active connection.
    push([make_draft(order_number="PO-2")], capture)
    assert ERPExport.objects.get(draft__order_number="PO-2").connection == new
    html = admin_client.get(reverse("admin:connectors_erpconnection_changelist")).content.decode()
    assert "draining" not in html


def test_poll_acks_reads_a_deactivated_connection(make_draft, local_connection, local_dropzone, capsys,
                                                  django_capture_on_commit_callbacks) -> None:
    push([make_draft()], django_capture_on_commit_callbacks)
    export = ERPExport.objects.get()
    ERPConnection.objects.filter(pk=local_connection.pk).update(is_active=False)
    ack_file(local_dropzone, export)
    call_command("poll_acks", "--connection", str(local_connection.pk))
    assert "1 accepted" in capsys.readouterr().out
    assert DraftOrder.objects.get().status == "CONFIRMED"


# -- 5: claims heal fast; SENT as soon as renamed -----------------------------------------


def test_a_claim_lasts_about_a_minute_with_default_settings(make_draft, local_connection, settings) -> None:
    assert settings.Q_CLUSTER["timeout"] == 300  # the default task timeout is not the lease any more
    ERPExport.objects.create(draft=make_draft(), connection=local_connection)
    before = timezone.now()
    claimed = delivery.claim_due_exports(connection=local_connection)
    assert timedelta(seconds=50) <= claimed[0].claimed_until - before <= timedelta(seconds=65)


def test_a_run_killed_midway_has_recorded_what_it_delivered(make_draft, local_connection, local_dropzone,
                                                           monkeypatch) -> None:
    drafts = [make_draft(order_number=f"PO-{n}") for n in range(120)]
    for draft in drafts:
        ERPExport.objects.create(draft=draft, connection=local_connection)
    real_put = LocalTransport.put_atomic
    uploads = []

    class Killed(BaseException):
        """kill -9: nothing after this point runs."""

    def put(self, directory, name, data):
        if len(uploads) == 80:
            raise Killed
        uploads.append(name)
        return real_put(self, directory, name, data)

    monkeypatch.setattr(LocalTransport, "put_atomic", put)
    with pytest.raises(Killed):
        delivery.deliver_due_exports(connection=local_connection)
    sent = ERPExport.objects.filter(status="SENT").count()
    assert len(names(local_dropzone / "inbound")) == 80
    # Only the files of the last small chunk may be in the dropzone unrecorded (re-sent after the lease).
    assert 80 - delivery.FLUSH_EVERY <= sent <= 80


# -- 6: the command drains --------------------------------------------------------------


def test_deliver_exports_delivers_everything_due(make_draft, local_connection, local_dropzone, capsys) -> None:
    for n in range(450):
        ERPExport.objects.create(draft=make_draft(order_number=f"PO-{n}", lines=1), connection=local_connection)
    call_command("deliver_exports")
    out = capsys.readouterr().out
    assert ERPExport.objects.filter(status="SENT").count() == 450
    assert len(names(local_dropzone / "inbound")) == 450
    assert "run 3" in out and "done: 450 sent" in out


# -- 7: one bad ack never blocks the others ------------------------------------------------


@pytest.fixture
def sent_exports(make_draft, local_connection) -> list[ERPExport]:
    exports = []
    for n in range(3):
        draft = make_draft(order_number=f"PO-{n}", status=DraftOrder.Status.PUSHED)
        export = ERPExport.objects.create(draft=draft, connection=local_connection, status="SENT",
                                          sent_at=timezone.now(), filename=f"20261126T120501Z_acme_PO-{n}_x{n}.json")
        exports.append(export)
    return exports


@pytest.mark.parametrize("bad", ["too-long", "nul", "nul-in-key", "surrogate"])
def test_an_ack_the_database_cannot_hold_goes_to_failed_and_the_rest_apply(
    local_connection, local_dropzone, sent_exports, bad: str
) -> None:
    body = {"export_id": str(sent_exports[0].id), "status": "accepted", "erp_order_number": "SO-0"}
    raw = {"too-long": json.dumps({**body, "erp_order_number": "SO-" + "9" * 300}),
           "nul": json.dumps({**body, "message": "imported\u0000"}),
           "nul-in-key": json.dumps({**body, "x\u0000": 1}),
           "surrogate": json.dumps(body)[:-1] + ', "message": "\\ud800"}'}[bad]
    (local_dropzone / "outbound" / "ack_a-bad-one.json").write_text(raw)
    for export in sent_exports[1:]:
        ack_file(local_dropzone, export, number=f"SO-{export.draft.order_number}")
    report = poll(local_connection)
    assert report.outcomes == {"malformed": 1, "accepted": 2} and not report.error
    assert names(local_dropzone / "outbound" / "failed") == ["ack_a-bad-one.json"]
    assert ERPExport.objects.get(pk=sent_exports[0].pk).status == "SENT"
    assert DraftOrder.objects.filter(status="CONFIRMED").count() == 2
    event = ConnectorEvent.objects.get(kind="ack_malformed")
    assert "\x00" not in event.message and ("erp_order_number" in event.message or "cannot be stored" in event.message
                                            or "surrogate" in event.message)


def test_an_ack_the_database_refuses_is_filed_as_unappliable(local_connection, local_dropzone, sent_exports,
                                                             monkeypatch) -> None:
    from django.db import DatabaseError

    from connectors.inbound import answers

    real = answers.lifecycle.transition

    def refuse_the_first(verb, changes, **kwargs):
        if any(c.export_id == sent_exports[0].pk for c in changes):
            raise DatabaseError("value too long for type character varying(255)")
        return real(verb, changes, **kwargs)

    monkeypatch.setattr(answers.lifecycle, "transition", refuse_the_first)
    for export in sent_exports:
        ack_file(local_dropzone, export, number=f"SO-{export.draft.order_number}")
    assert poll(local_connection).outcomes == {"unappliable": 1, "accepted": 2}
    failed = names(local_dropzone / "outbound" / "failed")
    assert failed == [f"ack_{sent_exports[0].filename.removesuffix('.json')}.json"]
    assert DraftOrder.objects.filter(status="CONFIRMED").count() == 2


def test_a_poll_that_crashes_is_shown_as_failed(local_connection, local_dropzone, sent_exports, monkeypatch) -> None:
    def crash(**kwargs):
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(polling, "apply_acks", crash)
    ack_file(local_dropzone, sent_exports[0])
    with pytest.raises(RuntimeError):
        poll(local_connection)
    conn = ERPConnection.objects.get()
    assert conn.last_poll_ok is False and "something nobody expected" in conn.last_poll_message
    assert ConnectorEvent.objects.filter(kind="poll_failed", level="error").exists()
    assert conn.poll_claim_token is None  # released: the next poll is not held up



def test_poll_acks_drains_more_than_one_run(local_connection, local_dropzone, make_draft, capsys,
                                            monkeypatch) -> None:
    monkeypatch.setattr(polling, "MAX_ACKS_PER_POLL", 40)  # a run's bound, made small
    for n in range(100):
        draft = make_draft(order_number=f"PO-{n}", status=DraftOrder.Status.PUSHED)
        export = ERPExport.objects.create(draft=draft, connection=local_connection, status="SENT",
                                          sent_at=timezone.now(), filename=f"f_{n}.json")
        ack_file(local_dropzone, export, number=f"SO-{n}")
    call_command("poll_acks", "--connection", str(local_connection.pk))
    out = capsys.readouterr().out
    assert "run 1: 40 file(s); more waiting" in out and "run 2: 40 file(s); more waiting" in out
    assert "100 accepted" in out
    assert DraftOrder.objects.filter(status="CONFIRMED").count() == 100


# -- the transition's own guard --------------------------------------------------------


def test_a_change_that_names_another_draft_is_refused_and_changes_nothing(make_draft, local_connection) -> None:
    """A caller may tell a change's draft (a query less), but a wrong one would lock the wrong draft."""
    from connectors.services import lifecycle

    draft, other = make_draft(), make_draft(order_number="PO-OTHER")
    export = ERPExport.objects.create(draft=draft, connection=local_connection)
    change = lifecycle.Change(export.pk, draft_id=other.pk, fields={"last_error": "x"})
    with pytest.raises(ValueError, match="another draft"):
        lifecycle.transition(lifecycle.Verb.CANCEL, [change], actor="staff")
    export.refresh_from_db()
    assert export.status == ERPExport.Status.PENDING and export.last_error == ""
    assert not ConnectorEvent.objects.filter(export=export).exists()
