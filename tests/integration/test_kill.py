"""kill -9 of a real worker mid-batch, with default settings: the work resumes, fast, and nothing twice.

A `manage.py deliver_exports` / `poll_acks` child is killed (SIGKILL) while it
holds a batch.  This process then plays the every-minute schedule (run every
2 s here, so what is measured is the lease, not the schedule's period) until
everything is done, and checks:

- recovery time: the dead worker's claims expire after CLAIM_LEASE_SECONDS
  (default 60 s); with the real schedule's period on top, work resumes within
  about two minutes;
- delivery: an ERP that takes files as they arrive receives each export's
  file once, except the few that were in flight or not yet recorded at the
  kill (the contract's export_id de-duplication case);
- polling: every ack is applied exactly once.

Runs on SQLite and PostgreSQL (CI runs both).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from connectors.inbound import polling
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from connectors.outbound import delivery
from connectors.services.tenancy import local_root_of
from connectors.work.engine import Engine
from orderflow.models import DraftOrder, DraftOrderLine, Organization

from . import Child, child_env, manage, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("transactional_db", "sync_tasks")]
SCHEDULE_EVERY = 2.0  # seconds between this test's schedule runs (the real one runs every minute)


def make_connection() -> tuple[ERPConnection, Path, Path]:
    org = Organization.objects.create(slug="acme", name="ACME")
    inbound, outbound = local_root_of(org) / "zone" / "inbound", local_root_of(org) / "zone" / "outbound"
    inbound.mkdir(parents=True)
    outbound.mkdir()
    conn = ERPConnection.objects.create(
        organization=org, name="ERP", transport="local", is_active=True, min_ack_age_seconds=0,
        export_path="/zone/inbound", ack_path="/zone/outbound")
    return conn, inbound, outbound


def make_drafts(org: Organization, count: int, **fields) -> list[DraftOrder]:
    drafts = DraftOrder.objects.bulk_create(
        DraftOrder(organization=org, order_number=f"PO-{n:05d}", order_date=dt.date(2026, 11, 20),
                   customer_number="C-1", customer_name="Müller", **fields) for n in range(count))
    DraftOrderLine.objects.bulk_create(DraftOrderLine(draft=d, line_number=1, sku="BOLT", quantity=2) for d in drafts)
    return drafts


def kill_when(child: Child, ready, what: str) -> None:
    wait_until(ready, what=what, alive=child, step=0.01)
    os.kill(child.proc.pid, signal.SIGKILL)
    child.proc.wait()


class ERP(threading.Thread):
    """Takes each file from the export dir as soon as it is whole, counting every file it receives."""

    def __init__(self, inbound: Path) -> None:
        super().__init__(daemon=True)
        self.inbound, self.received, self.done = inbound, Counter(), threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for path in self.inbound.glob("*.json"):
                try:
                    data = path.read_bytes()
                    path.unlink()
                except FileNotFoundError:
                    continue
                self.received[json.loads(data)["export_id"]] += 1
            time.sleep(0.005)


def test_deliveries_of_a_killed_worker_resume_within_the_lease(tmp_path: Path) -> None:
    assert settings.CLAIM_LEASE_SECONDS == 60 and settings.Q_CLUSTER["timeout"] == 300  # the defaults
    conn, inbound, _outbound = make_connection()
    drafts = make_drafts(conn.organization, 1500, status=DraftOrder.Status.APPROVED)
    ERPExport.objects.bulk_create(ERPExport(draft=d, connection=conn, next_attempt_at=timezone.now())
                                  for d in drafts)
    erp = ERP(inbound)
    erp.start()
    child = Child(manage("deliver_exports"), env=child_env(tmp_path / "media"), log=tmp_path / "deliver.log")
    kill_when(child, lambda: sum(erp.received.values()) >= 300, "300 files delivered")
    killed_at = time.monotonic()
    held = ERPExport.objects.filter(status="PENDING", claim_token__isnull=False).count()
    assert held > 0, child.output  # it died holding a batch

    while ERPExport.objects.exclude(status="SENT").exists():
        assert time.monotonic() - killed_at < 120, "the work did not resume"
        engine = Engine(inline=True)
        while engine.round():  # an engine looks again at once when a job ended, else at its next tick
            pass
        time.sleep(SCHEDULE_EVERY)
    recovery = time.monotonic() - killed_at
    time.sleep(0.2)
    erp.done.set()
    erp.join()

    assert set(erp.received) == {str(pk) for pk in ERPExport.objects.values_list("pk", flat=True)}
    twice = [pk for pk, n in erp.received.items() if n > 1]
    # Only what was in flight or not yet recorded when it died (one lane, its queue, one chunk of outcomes).
    assert len(twice) <= delivery.FLUSH_EVERY + 3, twice
    assert recovery <= settings.CLAIM_LEASE_SECONDS + 3 * SCHEDULE_EVERY + 5
    print(f"\ndelivery: killed holding {held} exports; all SENT {recovery:.1f} s later; "
          f"{len(twice)} file(s) re-sent")


def test_polls_of_a_killed_worker_resume_within_the_lease(tmp_path: Path) -> None:
    conn, _inbound, outbound = make_connection()
    drafts = make_drafts(conn.organization, 1500, status=DraftOrder.Status.PUSHED)
    exports = ERPExport.objects.bulk_create(
        ERPExport(id=uuid.uuid4(), draft=d, connection=conn, status="SENT", sent_at=timezone.now(),
                  filename=f"x_{d.order_number}.json") for d in drafts)
    old = time.time() - 3600
    for export in exports:
        ack = outbound / f"ack_{export.filename.removesuffix('.json')}.json"
        ack.write_text(json.dumps({"export_id": str(export.pk), "status": "accepted",
                                   "erp_order_number": f"SO-{export.draft.order_number}"}))
        os.utime(ack, (old, old))
    child = Child(manage("poll_acks", "--connection", str(conn.pk)), env=child_env(tmp_path / "media"),
                  log=tmp_path / "poll.log")
    processed = outbound / "processed"
    kill_when(child, lambda: processed.is_dir() and len(os.listdir(processed)) >= 200, "200 acks filed")
    killed_at = time.monotonic()
    filed_before = len(os.listdir(processed))
    assert ERPConnection.objects.get().poll_claim_token is not None, child.output  # it died holding the claim

    while DraftOrder.objects.exclude(status="CONFIRMED").exists():
        assert time.monotonic() - killed_at < 120, "the polls did not resume"
        ERPConnection.objects.update(next_poll_at=timezone.now() - timedelta(seconds=1))  # its interval passed
        polling.poll_connection(connection=ERPConnection.objects.get())
        time.sleep(SCHEDULE_EVERY)
    recovery = time.monotonic() - killed_at

    accepted = Counter(ConnectorEvent.objects.filter(kind="ack_accepted").values_list("export_id", flat=True))
    assert len(accepted) == 1500 and max(accepted.values()) == 1  # each ack applied once
    assert DraftOrder.objects.filter(erp_order_id__startswith="SO-PO-").count() == 1500
    assert recovery <= settings.CLAIM_LEASE_SECONDS + 3 * SCHEDULE_EVERY + 5
    print(f"\npolling: killed after {filed_before} acks were filed; all CONFIRMED {recovery:.1f} s later")
