"""The scale-out a user runs: two real qcluster processes sharing a Redis broker and one database.

2,000 exports are delivered and 2,000 acks applied, each exactly once, while both clusters' engines race
for the same connection's slices; and two clusters share 200 connections fairly, none polled twice at once.
Runs on SQLite and PostgreSQL (CI runs both); `.ci/run` starts Redis if it is down.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from connectors.models import ConnectorEvent, EngineProcess, ERPConnection, ERPExport
from connectors.services.tenancy import local_root_of
from orderflow.models import DraftOrder, DraftOrderLine, Organization
from tests.fixtures.dropzones import connection_from, names
from tests.observability.scrape import scrape, total

from . import child_env, manage, running, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("transactional_db")]
N = 2000
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")  # a database of its own


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not running at {REDIS_URL} (.ci/run starts it)")
        pytest.skip(f"Redis is not running at {REDIS_URL}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


def dropzone(transport: str, org: Organization, request: pytest.FixtureRequest, tmp_path: Path,
             ) -> tuple[ERPConnection, Path]:
    """The connection and its dropzone on disk: a local directory, or the tests' real sshd."""
    if transport == "sftp":  # the pipelined batches, four channels per connection, in both clusters
        zone = request.getfixturevalue("sftp_dir")
        remote = str(zone)
        conn = connection_from(request.getfixturevalue("sftp_settings")(), org, export_path=f"{remote}/inbound",
                               ack_path=f"{remote}/outbound")
    else:
        zone = local_root_of(org) / "zone"
        conn = ERPConnection.objects.create(organization=org, name="ERP", transport="local", is_active=True,
                                            export_path="/zone/inbound", ack_path="/zone/outbound",
                                            min_ack_age_seconds=0)
    (zone / "inbound").mkdir(parents=True, exist_ok=True)
    (zone / "outbound").mkdir(exist_ok=True)
    return conn, zone


@pytest.mark.parametrize("transport", ["local", "sftp"])
def test_two_clusters_on_redis_deliver_and_apply_each_exactly_once(redis_url: str, tmp_path: Path, transport: str,
                                                                   request: pytest.FixtureRequest) -> None:
    org = Organization.objects.create(slug="acme", name="ACME")
    conn, zone = dropzone(transport, org, request, tmp_path)
    drafts = DraftOrder.objects.bulk_create(
        DraftOrder(organization=org, order_number=f"PO-{n:05d}", order_date=dt.date(2026, 11, 20),
                   customer_number="C-1", customer_name="Müller", status=DraftOrder.Status.APPROVED)
        for n in range(N))
    DraftOrderLine.objects.bulk_create(DraftOrderLine(draft=d, line_number=1, sku="BOLT", quantity=2) for d in drafts)
    # Not polled meanwhile: the acks below are read by polls made due for them.
    ERPConnection.objects.filter(pk=conn.pk).update(next_poll_at=timezone.now() + timedelta(days=1))
    env = child_env(tmp_path / "media", REDIS_URL=redis_url, Q_WORKERS="2", LOG_LEVEL="WARNING")
    with ExitStack() as stack:
        clusters = [stack.enter_context(running(manage("qcluster"), env=env, log=tmp_path / f"qcluster{n}.log"))
                    for n in (1, 2)]
        wait_until(lambda: EngineProcess.objects.filter(stopped_at=None).count() == 2, what="both engines",
                   alive=clusters[0])
        ERPExport.objects.bulk_create(ERPExport(draft=d, connection=conn, next_attempt_at=timezone.now())
                                      for d in drafts)  # due at once: both engines take slices of them
        wait_until(lambda: not ERPExport.objects.exclude(status="SENT").exists(),
                   what=f"the clusters to deliver {N} exports", timeout=240, alive=clusters[0])
        delivered = Counter(ConnectorEvent.objects.filter(kind="delivered").values_list("export_id", flat=True))
        assert len(delivered) == N and max(delivered.values()) == 1  # each export delivered once
        files = names(zone / "inbound")
        assert len(files) == N and set(files) == set(ERPExport.objects.values_list("filename", flat=True))

        for export in ERPExport.objects.all():
            stem = export.filename.removesuffix(".json")
            (zone / "outbound" / f"ack_{stem}.json").write_text(json.dumps(
                {"export_id": str(export.pk), "status": "accepted", "erp_order_number": f"SO-{stem[-8:]}"}))
        ERPConnection.objects.filter(pk=conn.pk).update(next_poll_at=timezone.now())
        wait_until(lambda: not DraftOrder.objects.exclude(status="CONFIRMED").exists(),
                   what=f"the clusters to apply {N} acks", timeout=240, alive=clusters[1])
        # /metrics (issue 20) adds up both engines' tallies, written with their heartbeats every 5 s.
        wait_until(lambda: (total(s := scrape(), "orderflow_delivery_files_total", result="sent") == N
                            and total(s, "orderflow_ack_files_total", outcome="accepted") == N),
                   what="both engines' tallies to add up on /metrics", timeout=30, alive=clusters[0])

    accepted = Counter(ConnectorEvent.objects.filter(kind="ack_accepted").values_list("export_id", flat=True))
    assert len(accepted) == N and max(accepted.values()) == 1  # each ack applied once
    assert names(zone / "outbound") == [] and len(names(zone / "outbound" / "processed")) == N
    assert not ConnectorEvent.objects.filter(kind__in=["ack_duplicate", "ack_malformed", "ack_unmatched"]).exists()


def test_two_clusters_share_200_connections_fairly(redis_url: str, tmp_path: Path) -> None:
    """Every connection polled on time, by whichever cluster has a free thread: both do a fair part, and
    no connection is ever polled by both at once (each poll's claim; the events would show a second one)."""
    conns = []
    for n in range(200):
        org = Organization.objects.create(slug=f"org{n}", name=f"Org {n}")
        (local_root_of(org) / "zone").mkdir(parents=True)
        conns.append(ERPConnection(organization=org, name="ERP", transport="local", is_active=True,
                                   export_path="/zone", ack_path="/zone", poll_interval_seconds=10))
    ERPConnection.objects.bulk_create(conns)
    env = child_env(tmp_path / "media", REDIS_URL=redis_url, LOG_LEVEL="WARNING", CONNECTOR_SESSIONS="4")
    polls: dict[int, list] = {c.pk: [] for c in ERPConnection.objects.all()}
    with ExitStack() as stack:
        clusters = [stack.enter_context(running(manage("qcluster"), env=env, log=tmp_path / f"qcluster{n}.log"))
                    for n in (1, 2)]
        deadline = time.monotonic() + 35
        while time.monotonic() < deadline:
            for pk, at in ERPConnection.objects.values_list("pk", "last_poll_at"):
                if at is not None and (not polls[pk] or polls[pk][-1] != at):
                    polls[pk].append(at)
            assert all(c.running() for c in clusters)
            time.sleep(0.5)
        engines = list(EngineProcess.objects.filter(stopped_at=None).values_list("polls", flat=True))
    assert len(engines) == 2 and min(engines) >= 0.25 * sum(engines), engines  # both did a fair part
    assert all(len(times) >= 3 for times in polls.values()), sorted(len(t) for t in polls.values())
    gaps = [(b - a).total_seconds() for times in polls.values() for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) < 2 * 10, sorted(gaps)[-5:]  # polled every 10 s: none ever missed a whole interval
