"""Ack polling, every row of the contract's §4, on a local dir, OpenSSH sftp and pyftpdlib FTP."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from connectors.inbound import polling
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from connectors.transports.base import TransportError
from connectors.transports.local import LocalTransport
from orderflow.models import DraftOrder
from tests.fixtures.dropzones import Dropzone, names, repoint
from tests.fixtures.pipeline import FakeClock


@pytest.fixture
def sent_export(dropzone: Dropzone, make_draft) -> ERPExport:
    draft = make_draft(status=DraftOrder.Status.PUSHED)
    export = ERPExport.objects.create(draft=draft, connection=dropzone.connection, status="SENT",
                                      sent_at=timezone.now())
    export.filename = f"20261126T120501Z_acme_PO-2026-0042_{str(export.id)[:8]}.json"
    export.save()
    DraftOrder.objects.filter(pk=draft.pk).update(erp_order_id=export.filename)
    return export


def ack_body(export: ERPExport, **extra: object) -> bytes:
    body = {"export_id": str(export.id), "export_filename": export.filename, "status": "accepted",
            "erp_order_number": "SO-778812", "message": "imported"}
    body.update(extra)
    return json.dumps(body).encode()


def error_body(export: ERPExport) -> bytes:
    return json.dumps({"export_id": str(export.id), "status": "rejected", "errors": [
        {"code": "UNKNOWN_SKU", "message": "BOLT-M8X40 is not in the item master", "line_number": 1}]}).encode()


def stem(export: ERPExport) -> str:
    return export.filename.removesuffix(".json")


def poll(dropzone: Dropzone) -> polling.PollReport:
    report = polling.poll_connection(connection=ERPConnection.objects.get(pk=dropzone.connection.pk), force=True)
    assert report is not None and not report.error, report
    return report


def test_accepted_ack_confirms_the_draft(dropzone: Dropzone, sent_export: ERPExport, admin_client) -> None:
    dropzone.put_ack(f"ack_{stem(sent_export)}.json", ack_body(sent_export, extra_key="kept"))
    report = poll(dropzone)
    sent_export.refresh_from_db()
    draft = DraftOrder.objects.get()
    assert report.outcomes == {"accepted": 1}
    assert sent_export.status == "ACKED" and sent_export.acked_at
    assert sent_export.ack_body["extra_key"] == "kept"
    assert draft.status == "CONFIRMED" and draft.erp_order_id == "SO-778812"
    assert names(dropzone.outbound) == [] and names(dropzone.processed) == [f"ack_{stem(sent_export)}.json"]
    conn = ERPConnection.objects.get()
    assert conn.last_poll_ok is True and conn.last_poll_at and "1 accepted" in conn.last_poll_message
    assert ConnectorEvent.objects.filter(kind="ack_accepted", export=sent_export).exists()
    html = admin_client.get(reverse("admin:orderflow_draftorder_changelist")).content.decode()
    assert "of-status-confirmed" in html


def test_error_file_rejects_the_draft(dropzone: Dropzone, sent_export: ERPExport, admin_client) -> None:
    dropzone.put_ack(f"error_{stem(sent_export)}.json", error_body(sent_export))
    assert poll(dropzone).outcomes == {"rejected": 1}
    sent_export.refresh_from_db()
    assert sent_export.status == "REJECTED" and sent_export.errors[0]["code"] == "UNKNOWN_SKU"
    draft = DraftOrder.objects.get()
    assert draft.status == "REJECTED" and draft.erp_order_id == sent_export.filename  # unchanged
    assert names(dropzone.processed) == [f"error_{stem(sent_export)}.json"]
    html = admin_client.get(reverse("admin:connectors_erpexport_change", args=[sent_export.pk])).content.decode()
    assert "BOLT-M8X40 is not in the item master" in html


MALFORMED = {
    "not-json": (b"this is not json", "not valid JSON"),
    "array": (b'[{"export_id": "x"}]', "expected an object"),
    "wrong-types": (b'{"export_id": 42, "status": "accepted", "erp_order_number": "SO-1"}', "export_id"),
    "too-big": (b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}', "limit"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    "not-utf8": (b'{"status": "accepted", "message": "\xff\xfe"}', "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_ack_goes_to_failed_with_the_reason(dropzone: Dropzone, sent_export: ERPExport,
                                                      case: str) -> None:
    data, reason = MALFORMED[case]
    dropzone.put_ack(f"ack_{case}.json", data)
    assert poll(dropzone).outcomes == {"malformed": 1}
    assert names(dropzone.failed) == [f"ack_{case}.json"] and names(dropzone.outbound) == []
    event = ConnectorEvent.objects.get(kind="ack_malformed")
    assert reason in event.message and event.level == "error"
    sent_export.refresh_from_db()
    assert sent_export.status == "SENT" and DraftOrder.objects.get().status == "PUSHED"


def test_unmatched_ack_goes_to_failed(dropzone: Dropzone, sent_export: ERPExport) -> None:
    import uuid

    body = json.dumps({"export_id": str(uuid.uuid4()), "status": "accepted", "erp_order_number": "SO-1"})
    dropzone.put_ack("ack_somebody-else.json", body.encode())
    assert poll(dropzone).outcomes == {"unmatched": 1}
    assert names(dropzone.failed) == ["ack_somebody-else.json"]
    assert "matches no export" in ConnectorEvent.objects.get(kind="ack_unmatched").message
    sent_export.refresh_from_db()
    assert sent_export.status == "SENT"


def test_matching_falls_back_to_filename_then_name(dropzone: Dropzone, make_draft) -> None:
    exports = []
    for n in range(2):
        e = ERPExport.objects.create(draft=make_draft(order_number=f"PO-{n}", status="PUSHED"),
                                     connection=dropzone.connection, status="SENT", filename=f"file-{n}.json")
        exports.append(e)
    dropzone.put_ack("ack_a.json", json.dumps({"export_filename": "file-0.json", "status": "accepted",
                                               "erp_order_number": "SO-0"}).encode())
    dropzone.put_ack("ack_file-1.json", json.dumps({"status": "accepted", "erp_order_number": "SO-1"}).encode())
    assert poll(dropzone).outcomes == {"accepted": 2}
    assert sorted(ERPExport.objects.values_list("erp_order_number", flat=True)) == ["SO-0", "SO-1"]


def test_second_ack_is_a_duplicate_and_first_wins(dropzone: Dropzone, sent_export: ERPExport) -> None:
    name = f"ack_{stem(sent_export)}.json"
    dropzone.put_ack(name, ack_body(sent_export))
    poll(dropzone)
    dropzone.put_ack(name, ack_body(sent_export, erp_order_number="SO-OTHER"))
    dropzone.put_ack(f"error_{stem(sent_export)}.json", error_body(sent_export))
    assert poll(dropzone).outcomes == {"duplicate": 2}
    sent_export.refresh_from_db()
    assert sent_export.status == "ACKED" and sent_export.erp_order_number == "SO-778812"
    assert DraftOrder.objects.get().status == "CONFIRMED"
    # Same name twice in processed/: the second gets a numeric suffix, nothing is overwritten.
    assert names(dropzone.processed) == sorted([name, f"ack_{stem(sent_export)}-1.json",
                                                f"error_{stem(sent_export)}.json"])
    assert ConnectorEvent.objects.filter(kind="ack_duplicate").count() == 2


def test_ack_arriving_while_export_is_pending(dropzone: Dropzone, make_draft) -> None:
    draft = make_draft(status="APPROVED")
    export = ERPExport.objects.create(draft=draft, connection=dropzone.connection, status="PENDING",
                                      filename="pending.json")
    dropzone.put_ack("ack_pending.json", ack_body(export))
    assert poll(dropzone).outcomes == {"accepted": 1}
    export.refresh_from_db()
    assert export.status == "ACKED" and export.sent_at
    assert DraftOrder.objects.get().status == "CONFIRMED"




def due_in(dropzone: Dropzone) -> float:
    """Seconds until the connection's next poll (what the engine waits for)."""
    return (ERPConnection.objects.get(pk=dropzone.connection.pk).next_poll_at - timezone.now()).total_seconds()


def test_a_half_written_ack_with_an_old_mtime_is_not_read_on_first_sight(dropzone: Dropzone, sent_export: ERPExport,
                                                                          clock: FakeClock) -> None:
    """The server's clock is behind (or FTP reports local time): an old mtime proves nothing."""
    ERPConnection.objects.filter(pk=dropzone.connection.pk).update(min_ack_age_seconds=30)
    name = f"ack_{stem(sent_export)}.json"
    full = ack_body(sent_export)
    dropzone.put_ack(name, full[:20], age=3600)  # half written, stamped an hour ago
    assert poll(dropzone).outcomes == {"waiting": 1}
    clock.now += 10
    dropzone.put_ack(name, full[:40], age=3600)  # grew: still being written
    assert poll(dropzone).outcomes == {"waiting": 1}
    dropzone.put_ack(name, full, age=3600)  # grew again
    assert poll(dropzone).outcomes == {"waiting": 1}
    clock.now += 10
    assert poll(dropzone).outcomes == {"waiting": 1}  # unchanged for 10 s by our clock: 20 s to go
    assert 19 <= due_in(dropzone) <= 20  # the next poll is when it will be old enough, not an interval later
    clock.now += 20
    assert poll(dropzone).outcomes == {"accepted": 1}
    assert ConnectorEvent.objects.filter(kind="ack_malformed").count() == 0
    # One "still being written" event for the file, not one per poll.
    assert ConnectorEvent.objects.filter(kind="ack_waiting").count() == 1


def test_a_future_dated_ack_is_read_once_old_enough_by_our_clock(dropzone: Dropzone, sent_export: ERPExport,
                                                                  clock: FakeClock) -> None:
    ERPConnection.objects.filter(pk=dropzone.connection.pk).update(min_ack_age_seconds=5)
    dropzone.put_ack(f"ack_{stem(sent_export)}.json", ack_body(sent_export), age=-86400)  # a day ahead
    # Seen; the poll does not wait for it (no worker ever sleeps on a timer): it is due again when it is ready.
    assert poll(dropzone).outcomes == {"waiting": 1}
    assert 4 <= due_in(dropzone) <= 5
    clock.now += 5
    assert poll(dropzone).outcomes == {"accepted": 1}
    assert ConnectorEvent.objects.filter(kind="ack_waiting").count() == 0


def test_with_the_default_minimum_age_a_10_s_interval_confirms_an_ack_within_15_s(
        dropzone: Dropzone, sent_export: ERPExport, clock: FakeClock) -> None:
    """Issue 10: first listed up to one interval after it appears, then read once our clock saw it unchanged
    for the default minimum age (by the poll due then): at most 15 s with a 10 s interval."""
    default = ERPConnection._meta.get_field("min_ack_age_seconds").get_default()
    ERPConnection.objects.filter(pk=dropzone.connection.pk).update(min_ack_age_seconds=default,
                                                                   poll_interval_seconds=10)
    dropzone.put_ack(f"ack_{stem(sent_export)}.json", ack_body(sent_export))
    assert poll(dropzone).outcomes == {"waiting": 1}
    wait = due_in(dropzone)
    assert 10 + wait <= 15
    clock.now += default  # when that next poll comes
    assert poll(dropzone).outcomes == {"accepted": 1}
    assert DraftOrder.objects.get().status == "CONFIRMED"


def test_a_connection_is_due_its_interval_after_its_last_poll(dropzone: Dropzone, sent_export: ERPExport) -> None:
    """Measured from its own last poll, never aligned to anything else (no "just missed it, wait another
    interval")."""
    ERPConnection.objects.filter(pk=dropzone.connection.pk).update(poll_interval_seconds=60)
    started = timezone.now()
    poll(dropzone)
    next_poll = ERPConnection.objects.get(pk=dropzone.connection.pk).next_poll_at
    assert timedelta(seconds=60) <= next_poll - started <= timedelta(seconds=61)
    assert list(polling.due_connections(next_poll - timedelta(seconds=1))) == []
    assert list(polling.due_connections(next_poll)) == [dropzone.connection]


def test_failed_polls_back_off(remote_dropzone: Dropzone) -> None:
    """A dead partner is tried again after its interval, then after twice, four times… (at most 15 min)."""
    from tests.servers.blackhole import closed_port

    repoint(remote_dropzone.connection, port=closed_port())
    ERPConnection.objects.filter(pk=remote_dropzone.connection.pk).update(poll_interval_seconds=60)
    waits = []
    for _ in range(6):
        report = polling.poll_connection(connection=ERPConnection.objects.get(), force=True)
        assert report is not None and report.error
        waits.append(round(due_in(remote_dropzone) / 60))
    assert waits == [1, 2, 4, 8, 15, 15]


def test_other_files_are_left_alone(dropzone: Dropzone, sent_export: ERPExport) -> None:
    for name in ("readme.txt", "ack_x.json.tmp", "ACK_upper.json", "invoice_1.json"):
        dropzone.put_ack(name, b"{}")
    report = poll(dropzone)
    assert report.outcomes == {}
    assert names(dropzone.outbound) == sorted(["readme.txt", "ack_x.json.tmp", "ACK_upper.json", "invoice_1.json"])


def test_failed_move_after_commit_is_filed_as_duplicate_next_time(dropzone: Dropzone, sent_export: ERPExport,
                                                                  monkeypatch) -> None:
    from connectors.transports.base import Transport

    def refuse(self, src, dest_dir):
        raise TransportError("permission denied on processed/", permanent=True, code="permission_denied")

    monkeypatch.setattr(Transport, "move_no_overwrite", refuse)
    name = f"ack_{stem(sent_export)}.json"
    dropzone.put_ack(name, ack_body(sent_export))
    assert poll(dropzone).outcomes == {"accepted": 1}
    assert names(dropzone.outbound) == [name]  # still there
    monkeypatch.undo()
    assert poll(dropzone).outcomes == {"duplicate": 1}
    assert names(dropzone.processed) == [name] and names(dropzone.outbound) == []
    assert ConnectorEvent.objects.filter(kind="ack_accepted").count() == 1
    assert "could not move the file" in ConnectorEvent.objects.get(kind="ack_not_moved").message


def test_poll_acks_command_and_overdue_flag(dropzone: Dropzone, sent_export: ERPExport, admin_client,
                                            capsys, settings) -> None:
    ERPExport.objects.filter(pk=sent_export.pk).update(sent_at=timezone.now() - timedelta(hours=3))
    url = reverse("admin:connectors_erpexport_changelist")
    html = admin_client.get(url, {"ack": "overdue"}).content.decode()
    assert "1 sent export(s) have no ack after 60 minutes" in html and sent_export.filename in html
    dropzone.put_ack(f"ack_{stem(sent_export)}.json", ack_body(sent_export))
    call_command("poll_acks", "--connection", str(dropzone.connection.pk))
    assert "1 accepted" in capsys.readouterr().out
    html = admin_client.get(url, {"ack": "overdue"}).content.decode()
    assert "have no ack after" not in html and sent_export.filename not in html


def test_unreachable_server_is_recorded_on_the_connection(remote_dropzone: Dropzone) -> None:
    from tests.servers.blackhole import closed_port

    repoint(remote_dropzone.connection, port=closed_port())
    report = polling.poll_connection(connection=ERPConnection.objects.get(), force=True)
    assert report is not None and report.error
    conn = ERPConnection.objects.get()
    assert conn.last_poll_ok is False and "poll failed" in conn.last_poll_message
    assert ConnectorEvent.objects.filter(kind="poll_failed", level="error").exists()


def test_a_claimed_connection_is_not_polled_twice(dropzone: Dropzone) -> None:
    assert polling.claim_connection(connection_id=dropzone.connection.pk) is not None
    assert polling.claim_connection(connection_id=dropzone.connection.pk, force=True) is None
    assert polling.poll_connection(connection=dropzone.connection, force=True) is None


@pytest.mark.parametrize("dropzone", ["local"], indirect=True)
def test_a_run_is_bounded_and_the_rest_follows(dropzone: Dropzone, make_draft, monkeypatch) -> None:
    monkeypatch.setattr(polling, "MAX_ACKS_PER_POLL", 3)
    for n in range(5):
        export = ERPExport.objects.create(draft=make_draft(order_number=f"PO-{n}", status="PUSHED"),
                                          connection=dropzone.connection, status="SENT", filename=f"f{n}.json")
        dropzone.put_ack(f"ack_f{n}.json", ack_body(export))
    first = poll(dropzone)
    assert first.outcomes == {"accepted": 3} and first.more
    assert ERPConnection.objects.get().next_poll_at <= timezone.now()  # due again at once
    assert poll(dropzone).outcomes == {"accepted": 2}
    assert ERPExport.objects.filter(status="ACKED").count() == 5


@pytest.mark.parametrize("dropzone", ["local"], indirect=True)
def test_a_drain_over_several_runs_looks_at_the_erps_inbox_once(dropzone: Dropzone, make_draft,
                                                                monkeypatch) -> None:
    """The inbox (our export dir) is listed for the "ERP stopped consuming" alert; a backlog drained in several
    runs needs it once a minute, not once per run: with 10,000 files left there, each look cost as much as
    reading 2,000 acks."""
    from connectors.work.jobs import drain_polls

    monkeypatch.setattr(polling, "MAX_ACKS_PER_POLL", 2)
    for n in range(5):
        export = ERPExport.objects.create(draft=make_draft(order_number=f"PO-{n}", status="PUSHED"),
                                          connection=dropzone.connection, status="SENT", filename=f"f{n}.json")
        dropzone.put_ack(f"ack_f{n}.json", ack_body(export))
    (dropzone.inbound / "f4.json").write_text("{}")  # one of our files the ERP has not taken
    listed: list[str] = []
    real = LocalTransport.list_dir
    monkeypatch.setattr(LocalTransport, "list_dir",
                        lambda self, path, **kw: listed.append(path) or real(self, path, **kw))

    reports = list(drain_polls(ERPConnection.objects.get()))

    assert [r.outcomes for r in reports] == [{"accepted": 2}, {"accepted": 2}, {"accepted": 1}]
    assert listed.count(dropzone.connection.export_path) == 1
    assert list(ERPConnection.objects.get().inbox_seen) == ["f4.json"]  # what the alert reads


@pytest.mark.parametrize("dropzone", ["local"], indirect=True)
def test_an_ack_dir_longer_than_a_listing_is_read_over_several_polls(dropzone: Dropzone, make_draft,
                                                                    monkeypatch) -> None:
    """Issue 17: a listing reads at most LISTING_LIMIT entries (memory stays bounded whatever a server sends);
    while a poll files acks, the next one comes at once and its listing reaches further."""
    from connectors.work.jobs import drain_polls

    monkeypatch.setattr(polling, "LISTING_LIMIT", 4)
    for n in range(10):
        export = ERPExport.objects.create(draft=make_draft(order_number=f"PO-{n}", status="PUSHED"),
                                          connection=dropzone.connection, status="SENT", filename=f"f{n}.json")
        dropzone.put_ack(f"ack_f{n}.json", ack_body(export))
    reports = list(drain_polls(ERPConnection.objects.get()))
    assert sum(r.outcomes.get("accepted", 0) for r in reports) == 10 and len(reports) >= 3
    assert all(r.handled <= 4 for r in reports) and reports[0].crowded
    assert ERPExport.objects.filter(status="ACKED").count() == 10


@pytest.mark.parametrize("dropzone", ["local"], indirect=True)
def test_an_ack_dir_crowded_with_other_files_says_so(dropzone: Dropzone, sent_export: ERPExport,
                                                     monkeypatch) -> None:
    monkeypatch.setattr(polling, "LISTING_LIMIT", 4)
    for n in range(10):
        dropzone.put_ack(f"readme-{n}.txt", b"not an ack")
    report = poll(dropzone)
    assert report.crowded and not report.more  # not polled again at once: the same files would be listed
    message = ERPConnection.objects.get().last_poll_message
    assert "the ack dir holds more than 4 entries: each poll reads the first 4" in message


def test_a_chunk_of_acks_holds_at_most_a_few_megabytes() -> None:
    """100 valid 1 MiB error files read in one chunk took 361 MB (helper measurement, issue 17)."""
    from connectors.inbound.polling import CHUNK, CHUNK_BYTES, _chunks
    from connectors.transports import RemoteFile

    big = [RemoteFile(f"error_{n}.json", 1024 * 1024, None) for n in range(100)]
    chunks = list(_chunks(big))
    assert sum(len(c) for c in chunks) == 100
    assert all(sum(f.size for f in c) <= CHUNK_BYTES for c in chunks)
    small = [RemoteFile(f"ack_{n}.json", 300, None) for n in range(250)]
    assert [len(c) for c in _chunks(small)] == [CHUNK, CHUNK, 50]
    huge = [RemoteFile("ack_x.json", CHUNK_BYTES * 2, None)]
    assert list(_chunks(huge)) == [huge]  # a file alone goes alone


@pytest.mark.parametrize("dropzone", ["local"], indirect=True)
def test_an_ack_that_is_a_hard_link_is_filed_unread(dropzone: Dropzone, sent_export: ERPExport, tmp_path) -> None:
    """Issue 18: its bytes (a file elsewhere on the filesystem) would be stored and shown in the admin."""
    import os

    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(ack_body(sent_export, message="TOP-SECRET elsewhere"))
    os.link(elsewhere, dropzone.outbound / f"ack_{stem(sent_export)}.json")
    assert poll(dropzone).outcomes == {"malformed": 1}
    assert ERPExport.objects.get().status == "SENT"
    assert names(dropzone.failed) == [f"ack_{stem(sent_export)}.json"]
    event = ConnectorEvent.objects.get(kind="ack_malformed")
    assert "another hard link" in event.message and "TOP-SECRET" not in event.message + repr(event.details)
