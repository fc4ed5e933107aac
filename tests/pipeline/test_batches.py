"""Issue 10: behaviour under batching — per-export outcomes in a batch, and a big mixed poll."""

from __future__ import annotations

import json
import uuid

import pytest
from django.utils import timezone

from connectors.inbound import polling
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from connectors.outbound import delivery
from orderflow.models import DraftOrder
from tests.fixtures.dropzones import Dropzone, names


def test_a_batch_with_failures_mid_way_gives_each_export_its_own_outcome(dropzone: Dropzone, make_draft) -> None:
    exports = [ERPExport.objects.create(draft=make_draft(order_number=f"PO-{n}"), connection=dropzone.connection,
                                        next_attempt_at=timezone.now()) for n in range(12)]
    # Freeze the names first (one run that cannot connect), then plant foreign files with two of them.
    ERPExport.objects.filter(pk__in=[e.pk for e in exports]).update(next_attempt_at=timezone.now())
    for export in exports:
        delivery._freeze([ERPExport.objects.select_related("draft__organization").get(pk=export.pk)],
                         dropzone.connection)
    bad = [ERPExport.objects.get(pk=exports[n].pk) for n in (3, 8)]
    for export in bad:
        (dropzone.inbound / export.filename).write_bytes(b"somebody else's file\n")
    report = delivery.deliver_due_exports(connection=ERPConnection.objects.get(pk=dropzone.connection.pk))
    assert len(report.sent) == 10 and len(report.failed) == 2
    statuses = dict(ERPExport.objects.values_list("pk", "status"))
    assert [statuses[e.pk] for e in bad] == ["FAILED", "FAILED"]
    assert sum(s == "SENT" for s in statuses.values()) == 10
    for export in bad:
        assert (dropzone.inbound / export.filename).read_bytes() == b"somebody else's file\n"  # never overwritten
        assert "not overwritten" in ERPExport.objects.get(pk=export.pk).last_error
    assert DraftOrder.objects.filter(status="PUSHED").count() == 10
    assert DraftOrder.objects.filter(status="PUSH_FAILED").count() == 2


@pytest.mark.parametrize("dropzone", ["local", "sftp"], indirect=True)  # sftp: the pipelined batches
def test_a_poll_of_2000_acks_with_malformed_and_duplicates_mixed_in(dropzone: Dropzone, org) -> None:
    drafts = DraftOrder.objects.bulk_create(
        DraftOrder(organization=org, order_number=f"PO-{n}", order_date=timezone.now().date(), customer_number="C",
                   customer_name="M", status="PUSHED") for n in range(2000))
    exports = ERPExport.objects.bulk_create(
        ERPExport(id=uuid.uuid4(), draft=d, connection=dropzone.connection, status="SENT", sent_at=timezone.now(),
                  filename=f"f-{n}.json") for n, d in enumerate(drafts))
    outbound = dropzone.outbound
    for n, export in enumerate(exports):
        body = {"export_id": str(export.pk), "status": "accepted", "erp_order_number": f"SO-{n}"}
        (outbound / f"ack_f-{n}.json").write_text(json.dumps(body))
        if n % 500 == 0:  # the ERP answered twice
            (outbound / f"ack_f-{n}-again.json").write_text(json.dumps(body))
        if n % 400 == 0:  # and wrote some junk
            (outbound / f"ack_junk-{n}.json").write_text("{not json")
    totals: dict[str, int] = {}
    while True:
        report = polling.poll_connection(connection=ERPConnection.objects.get(pk=dropzone.connection.pk), force=True)
        for outcome, count in report.outcomes.items():
            totals[outcome] = totals.get(outcome, 0) + count
        if not report.more:
            break
    assert totals == {"accepted": 2000, "duplicate": 4, "malformed": 5}
    assert DraftOrder.objects.filter(status="CONFIRMED").count() == 2000
    assert names(outbound) == [] and len(names(outbound / "processed")) == 2004
    assert len(names(outbound / "failed")) == 5
    assert ConnectorEvent.objects.filter(kind="ack_malformed").count() == 5
