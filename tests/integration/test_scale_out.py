"""The scale-out a user runs: two real qcluster processes sharing a Redis broker and one database.

2,000 exports are delivered and 2,000 acks applied, each exactly once, while
several delivery and poll tasks race through both clusters.  Runs on
SQLite and PostgreSQL (CI runs both); `.ci/run` starts Redis if it is down.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule

from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from orderflow.models import DraftOrder, DraftOrderLine, Organization
from tests.fixtures.dropzones import connection_from, names

from . import Child, child_env, manage, running, wait_until

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


def enqueue(env: dict[str, str], tmp_path: Path, func: str, *args: object, times: int) -> None:
    """Put tasks into the clusters' Redis queue, as their schedulers would (a child with the same settings)."""
    code = ("from django_q.tasks import async_task\n"
            f"for _ in range({times}): async_task({func!r}, *{args!r})")
    child = Child(manage("shell", "-c", code), env=env, log=tmp_path / f"enqueue-{func.rsplit('.', 1)[1]}.log")
    assert child.wait() == 0, child.output


def dropzone(transport: str, org: Organization, request: pytest.FixtureRequest, tmp_path: Path,
             ) -> tuple[ERPConnection, Path]:
    """The connection and its dropzone on disk: a local directory, or the tests' real sshd."""
    if transport == "sftp":  # the pipelined batches, four channels per connection, in both clusters
        zone = request.getfixturevalue("sftp_dir")
        remote = str(zone)
        conn = connection_from(request.getfixturevalue("sftp_settings")(), org, export_path=f"{remote}/inbound",
                               ack_path=f"{remote}/outbound")
    else:
        zone = tmp_path / "zone"
        jail = "/" + str(zone.relative_to(settings.LOCAL_DROPZONE_ROOT))
        conn = ERPConnection.objects.create(organization=org, name="ERP", transport="local", is_active=True,
                                            export_path=f"{jail}/inbound", ack_path=f"{jail}/outbound",
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
    ERPExport.objects.bulk_create(ERPExport(draft=d, connection=conn, next_attempt_at=timezone.now()) for d in drafts)
    # The clusters' own schedulers would join in after a while; the tasks below are enough to race.
    Schedule.objects.update(next_run=timezone.now() + timedelta(days=1))

    env = child_env(tmp_path / "media", REDIS_URL=redis_url, Q_WORKERS="2", LOG_LEVEL="WARNING")
    with ExitStack() as stack:
        clusters = [stack.enter_context(running(manage("qcluster"), env=env, log=tmp_path / f"qcluster{n}.log"))
                    for n in (1, 2)]
        enqueue(env, tmp_path, "connectors.tasks.deliver_connection", conn.pk, times=4)
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
        enqueue(env, tmp_path, "connectors.tasks.poll_connection", conn.pk, True, times=4)
        wait_until(lambda: not DraftOrder.objects.exclude(status="CONFIRMED").exists(),
                   what=f"the clusters to apply {N} acks", timeout=240, alive=clusters[1])

    accepted = Counter(ConnectorEvent.objects.filter(kind="ack_accepted").values_list("export_id", flat=True))
    assert len(accepted) == N and max(accepted.values()) == 1  # each ack applied once
    assert names(zone / "outbound") == [] and len(names(zone / "outbound" / "processed")) == N
    assert not ConnectorEvent.objects.filter(kind__in=["ack_duplicate", "ack_malformed", "ack_unmatched"]).exists()
