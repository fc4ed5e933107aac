"""Issue 17: one organization's slow ERP must not hold up another's orders.

Measured before the engine: with one organization's FTP server answering slowly, another organization's
push was delivered after 183 s instead of 1 s (the worker slots waited on the slow server).  Here a real
``qcluster`` runs while organization A's FTP server drips its listing, a byte at a time, for as long as A's
poll lets it; organization B pushes a draft meanwhile.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from connectors.models import ERPConnection, ERPExport
from connectors.outbound.pushing import push_drafts
from connectors.services.tenancy import local_root_of
from orderflow.models import DraftOrder, DraftOrderLine, Organization
from tests.fixtures.dropzones import connection_from, names
from tests.servers.dripping import DrippingFTPServer

from . import child_env, manage, running, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("transactional_db")]


def test_a_slow_erp_does_not_delay_another_organizations_push(tmp_path: Path) -> None:
    slow_org = Organization.objects.create(slug="slow", name="Slow ERP Ltd")
    org = Organization.objects.create(slug="acme", name="ACME")
    zone = local_root_of(org)
    for sub in ("inbound", "outbound"):
        (zone / sub).mkdir(parents=True)
    ERPConnection.objects.create(organization=org, name="ERP", transport="local", is_active=True,
                                 export_path="/inbound", ack_path="/outbound",
                                 next_poll_at=timezone.now() + timedelta(hours=1))
    draft = DraftOrder.objects.create(organization=org, order_number="PO-1", order_date=timezone.now().date(),
                                      customer_number="C-1", customer_name="Müller")
    DraftOrderLine.objects.create(draft=draft, line_number=1, sku="BOLT", quantity=2)

    with DrippingFTPServer("data", interval=0.2) as dripping:
        # Its listing drips for the whole 30 s operation timeout of every poll.
        slow = connection_from(dripping.settings(operation_timeout=30.0, connect_timeout=5.0), slow_org,
                               export_path="/in", ack_path="/drip", poll_interval_seconds=10)
        # One django-q2 worker: before the engine, the slow ERP's poll task held it and the push waited.
        env = child_env(tmp_path / "media", LOG_LEVEL="WARNING", Q_WORKERS="1")
        with running(manage("qcluster"), env=env, log=tmp_path / "qcluster.log") as cluster:
            wait_until(lambda: ERPConnection.objects.filter(pk=slow.pk, poll_claim_token__isnull=False).exists(),
                       what="the slow ERP's poll to start", alive=cluster)
            pushed = time.monotonic()
            push_drafts(drafts=[draft])
            export = wait_until(lambda: ERPExport.objects.filter(status=ERPExport.Status.SENT).first(),
                                what="the push to be delivered", alive=cluster)
            delivered_after = time.monotonic() - pushed
            still_slow = ERPConnection.objects.filter(pk=slow.pk, poll_claim_token__isnull=False).exists()
    assert still_slow  # delivered while the slow ERP's poll was still going: it waited for nothing
    assert names(zone / "inbound") == [export.filename]
    print(f"delivered {delivered_after:.2f} s after the push, the slow ERP's poll still running")
