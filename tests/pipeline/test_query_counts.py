"""Issue 10: database queries per export and per ack are a small constant, whatever the batch size."""

from __future__ import annotations

import json
import uuid

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connectors.inbound import polling
from connectors.models import ERPConnection, ERPExport
from connectors.outbound import delivery
from orderflow.models import DraftOrder, DraftOrderLine


def drafts(org, n: int, **fields) -> list[DraftOrder]:
    made = DraftOrder.objects.bulk_create(
        DraftOrder(organization=org, order_number=f"PO-{uuid.uuid4().hex[:8]}", order_date=timezone.now().date(),
                   customer_number="C", customer_name="M", **fields) for _ in range(n))
    DraftOrderLine.objects.bulk_create(DraftOrderLine(draft=d, line_number=1, sku="S", quantity=1) for d in made)
    return made


def delivery_queries(org, conn: ERPConnection, n: int) -> int:
    ERPExport.objects.bulk_create(ERPExport(draft=d, connection=conn, next_attempt_at=timezone.now())
                                  for d in drafts(org, n, status="APPROVED"))
    with CaptureQueriesContext(connection) as queries:
        report = delivery.deliver_due_exports(connection=conn)
    assert len(report.sent) == n
    return len(queries)


def poll_queries(org, conn: ERPConnection, outbound, n: int) -> int:
    exports = ERPExport.objects.bulk_create(
        ERPExport(id=uuid.uuid4(), draft=d, connection=conn, status="SENT", sent_at=timezone.now(),
                  filename=f"{d.order_number}.json") for d in drafts(org, n, status="PUSHED"))
    for export in exports:
        (outbound / f"ack_{export.pk}.json").write_text(json.dumps(
            {"export_id": str(export.pk), "status": "accepted", "erp_order_number": "SO-1"}))
    with CaptureQueriesContext(connection) as queries:
        report = polling.poll_connection(connection=ERPConnection.objects.get(pk=conn.pk), force=True)
    assert report.outcomes == {"accepted": n}
    return len(queries)


def test_queries_per_export_do_not_grow_with_the_batch(org, local_connection) -> None:
    small, big = delivery_queries(org, local_connection, 20), delivery_queries(org, local_connection, 160)
    per_export = (big - small) / 140
    print(f"delivery: {small} queries for 20 exports, {big} for 160: {per_export:.2f} per export")
    assert per_export <= 0.75, (small, big)  # about half a query per export (chunks of 25 and 20)


def test_queries_per_ack_do_not_grow_with_the_batch(org, local_connection, local_dropzone) -> None:
    outbound = local_dropzone / "outbound"
    small = poll_queries(org, local_connection, outbound, 20)
    big = poll_queries(org, local_connection, outbound, 200)
    per_ack = (big - small) / 180
    print(f"polling: {small} queries for 20 acks, {big} for 200: {per_ack:.2f} per ack")
    assert per_ack <= 0.5, (small, big)  # chunks of 50: a handful of queries per chunk
