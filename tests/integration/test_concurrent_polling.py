"""Two ack pollers at once, as two OS processes on the test database: every ack is applied exactly once.

Runs on SQLite and on PostgreSQL (CI runs both; a skip would count as a
failure).  The pollers are real processes, each with its own database
connection, and both wait at a start line so they really hit the database at
the same moment.  On PostgreSQL that exercises the row locks; SQLite
serialises writers (``transaction_mode=IMMEDIATE``), which must give the same
result.  SQLite's busy handler is not fair, though: a poller that keeps
writing can hold off the other one for its whole run, so on SQLite the
assertions that the pollers *shared* the work or *overlapped* are left out
(``FAIR_LOCKS``) and only the exactly-once assertions remain.

What is proven:
- one connection, 500 acks, ``manage.py poll_acks`` twice: the connection
  claim lets only one of them poll, the other skips;
- five connections x 100 acks, two pollers walking them in opposite orders:
  the work is shared, every connection is polled, nothing is applied twice;
- a claim that outlives its lease (a stuck poller): a second poller polls the
  same ack dir *while the first is still in it*, and the row lock in
  ``apply_ack`` still applies each ack once (the loser files it as a duplicate).

In that last, overlapping case the poller whose claim expired notices at
its next claim renewal and stops (a ``poll_failed`` event saying it outlived
its claim); a listed file the other poller moved away meanwhile counts as
"vanished", and a move race leaves exactly one filed copy.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection as db
from django.utils import timezone

from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from connectors.services.tenancy import local_root_of
from orderflow.models import DraftOrder, Organization
from tests.fixtures.dropzones import names

from . import Child, child_env, running, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("transactional_db")]

# Runs in the child: set Django up, open the database connection, signal "ready", wait for "go", poll.
# mode "command": `manage.py poll_acks --connection ID` for each id (its text output is the result);
# mode "service": polling.poll_connection(force=True) for each id, one JSON line per connection.
POLLER = r"""
import json, sys, time
from pathlib import Path

import django

django.setup()
from django.core.management import call_command

from connectors.models import ERPConnection
from connectors.inbound import polling

ready, go, mode, *ids = sys.argv[1:]
ERPConnection.objects.exists()  # connect now, not after the start signal
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
for pk in map(int, ids):
    if mode == "command":
        call_command("poll_acks", "--connection", str(pk))
        continue
    report = polling.poll_connection(connection=ERPConnection.objects.get(pk=pk), force=True)
    print("RESULT " + json.dumps({"connection": pk, "claimed": report is not None,
                                  "outcomes": report.outcomes if report else {},
                                  "error": report.error if report else ""}), flush=True)
"""


def fair_locks() -> bool:
    """PostgreSQL queues waiting writers; SQLite lets them retry on a timer, so one can be starved."""
    return db.vendor == "postgresql"


@dataclass
class Poller:
    child: Child
    ready: Path
    go: Path

    def results(self) -> list[dict]:
        """The "service" mode's per-connection reports."""
        return [json.loads(line.removeprefix("RESULT ")) for line in self.child.output.splitlines()
                if line.startswith("RESULT ")]


@dataclass
class Dropzone:
    connection: ERPConnection
    outbound: Path
    exports: list[ERPExport]


def start_pollers(stack: ExitStack, tmp_path: Path, plans: list[tuple[str, list[int]]]) -> list[Poller]:
    """Start one child per (mode, connection ids) and wait until every one stands at its start line."""
    env = child_env(tmp_path / "media", LOG_LEVEL="WARNING")  # one INFO line per ack would swamp a failure report
    pollers = []
    for n, (mode, ids) in enumerate(plans):
        ready, go = tmp_path / f"ready-{n}", tmp_path / f"go-{n}"
        argv = [sys.executable, "-c", POLLER, str(ready), str(go), mode, *map(str, ids)]
        child = stack.enter_context(running(argv, env=env, log=tmp_path / f"poller-{n}.log"))
        pollers.append(Poller(child=child, ready=ready, go=go))
    for poller in pollers:
        wait_until(poller.ready.exists, what="a poller to start", alive=poller.child)
    return pollers


def finish(pollers: list[Poller]) -> None:
    for poller in pollers:
        assert poller.child.wait() == 0, poller.child.output


def jailed(path: Path, organization: Organization) -> str:
    """A local connection's path: inside its organization's directory of LOCAL_DROPZONE_ROOT (the test's tmp dir)."""
    return "/" + str(path.relative_to(local_root_of(organization)))


def make_dropzone(root: Path, slug: str, count: int) -> Dropzone:
    """An organization with an active local connection, ``count`` SENT exports and one ack file each."""
    organization = Organization.objects.create(slug=slug, name=f"Org {slug}")
    inbound, outbound = local_root_of(organization) / "inbound", local_root_of(organization) / "outbound"
    inbound.mkdir(parents=True)
    outbound.mkdir()
    connection = ERPConnection.objects.create(
        organization=organization, name="ERP", transport="local", is_active=True,
        export_path=jailed(inbound, organization), ack_path=jailed(outbound, organization), min_ack_age_seconds=0,
    )
    ids = [uuid.uuid4() for _ in range(count)]
    files = [f"20261126T120501Z_{slug}_PO-{n:04d}_{str(pk)[:8]}.json" for n, pk in enumerate(ids)]
    drafts = DraftOrder.objects.bulk_create(
        DraftOrder(organization=organization, order_number=f"PO-{n:04d}", order_date=dt.date(2026, 11, 20),
                   customer_number="C-1001", customer_name="Müller Maschinenbau", status=DraftOrder.Status.PUSHED,
                   erp_order_id=files[n])
        for n in range(count)
    )
    sent_at = timezone.now() - timedelta(minutes=5)
    exports = ERPExport.objects.bulk_create(
        ERPExport(id=pk, draft=draft, connection=connection, status=ERPExport.Status.SENT, filename=name,
                  attempts=1, sent_at=sent_at)
        for pk, draft, name in zip(ids, drafts, files, strict=True)
    )
    old = time.time() - 3600  # well past any minimum age: every file is ready on the first listing
    for n, export in enumerate(exports):
        path = outbound / f"ack_{export.filename.removesuffix('.json')}.json"
        path.write_text(json.dumps({"export_id": str(export.id), "export_filename": export.filename,
                                    "status": "accepted", "erp_order_number": f"SO-{slug}-{n}"}))
        os.utime(path, (old, old))
    return Dropzone(connection=connection, outbound=outbound, exports=exports)


def assert_each_ack_applied_once(dropzones: list[Dropzone], *, overlapped: bool = False) -> None:
    """Every export ACKED and its draft CONFIRMED by exactly one ``ack_accepted``; every ack file filed."""
    expected = {export.id for zone in dropzones for export in zone.exports}
    assert ERPExport.objects.filter(status=ERPExport.Status.ACKED).count() == len(expected)
    assert not ERPExport.objects.exclude(status=ERPExport.Status.ACKED).exists()
    assert DraftOrder.objects.filter(status=DraftOrder.Status.CONFIRMED, erp_order_id__startswith="SO-").count() \
        == len(expected)
    accepted = list(ConnectorEvent.objects.filter(kind="ack_accepted").values_list("export_id", flat=True))
    repeated = [pk for pk, n in Counter(accepted).items() if n > 1]
    assert repeated == [] and set(accepted) == expected and len(accepted) == len(expected)
    others = Counter(ConnectorEvent.objects.exclude(kind__in=["ack_accepted", "poll_done"])
                     .values_list("kind", flat=True))
    if not overlapped:
        assert not others, others  # no duplicate, malformed, unmatched or failed poll
    else:
        # Two pollers in one dir: the one behind sees "duplicate" for acks the other applied; the one whose
        # claim expired stops at its next renewal (see the module docstring).
        assert set(others) <= {"ack_duplicate", "poll_failed"}, others
        for message in ConnectorEvent.objects.filter(kind="poll_failed").values_list("message", flat=True):
            assert "outlived its claim" in message, message
    for zone in dropzones:
        acks = {f"ack_{e.filename}" for e in zone.exports}  # ack_<export file name without .json>.json
        processed = zone.outbound / "processed"
        assert names(zone.outbound) == []  # nothing left behind in the ack dir
        assert names(zone.outbound / "failed") == []
        # Each ack filed once (a mover that lost a link race takes its copy back), possibly as "x-N.json".
        filed = Counter(re.sub(r"-\d+\.json$", ".json", name) for name in names(processed))
        assert set(filed) == acks and set(filed.values()) == {1}, filed
        zone.connection.refresh_from_db()
        assert zone.connection.poll_claim_token is None and zone.connection.poll_claimed_until is None
        if not overlapped:
            assert zone.connection.last_poll_ok and zone.connection.ack_listing == {}


@pytest.fixture
def dropzone_root(tmp_path: Path) -> Path:
    return tmp_path / "dropzones"


def test_two_poll_acks_commands_on_one_connection(dropzone_root: Path, tmp_path: Path) -> None:
    zone = make_dropzone(dropzone_root, "acme", 500)
    with ExitStack() as stack:
        pollers = start_pollers(stack, tmp_path, [("command", [zone.connection.pk])] * 2)
        started = time.monotonic()
        for poller in pollers:
            poller.go.touch()
        finish(pollers)
        elapsed = time.monotonic() - started
        outputs = [p.child.output for p in pollers]

    assert_each_ack_applied_once([zone])
    winners = [out for out in outputs if "500 accepted" in out]
    assert len(winners) == 1, outputs
    loser = next(out for out in outputs if out is not winners[0])
    # Normally the loser meets the claim; a loser held up for the whole poll finds an empty dir instead.
    assert "being polled by another worker right now; skipped" in loser or "no ack files" in loser, loser
    print(f"500 acks polled in {elapsed:.1f} s; loser: {loser.strip()}")


def test_two_pollers_share_five_connections(dropzone_root: Path, tmp_path: Path) -> None:
    zones = [make_dropzone(dropzone_root, f"org{n}", 100) for n in range(5)]
    ids = [zone.connection.pk for zone in zones]
    with ExitStack() as stack:
        # Opposite orders: they start on different connections and meet in the middle.
        pollers = start_pollers(stack, tmp_path, [("service", ids), ("service", ids[::-1])])
        started = time.monotonic()
        for poller in pollers:
            poller.go.touch()
        finish(pollers)
        elapsed = time.monotonic() - started
        results = [poller.results() for poller in pollers]

    assert_each_ack_applied_once(zones)
    for poller_results in results:
        assert sorted(r["connection"] for r in poller_results) == sorted(ids)  # each walked every connection
        assert all(r["error"] == "" for r in poller_results)
        if fair_locks():
            # Both did part of the work: each claimed its first connection before the other could reach it.
            assert sum(r["outcomes"].get("accepted", 0) for r in poller_results) > 0, results
    for pk in ids:
        mine = [r for rs in results for r in rs if r["connection"] == pk]
        assert any(r["claimed"] for r in mine)
        assert sum(r["outcomes"].get("accepted", 0) for r in mine) == 100
    skipped = sum(not r["claimed"] for rs in results for r in rs)
    print(f"5 x 100 acks polled in {elapsed:.1f} s; {skipped} poll(s) met the other's claim")


def test_overlapping_pollers_after_an_expired_claim(dropzone_root: Path, tmp_path: Path) -> None:
    zone = make_dropzone(dropzone_root, "acme", 500)
    accepted_so_far: Callable[[], int] = ConnectorEvent.objects.filter(kind="ack_accepted").count
    with ExitStack() as stack:
        first, second = start_pollers(stack, tmp_path, [("service", [zone.connection.pk])] * 2)
        first.go.touch()
        wait_until(lambda: accepted_so_far() >= 20, what="the first poller to be under way", alive=first.child,
                   step=0.02)
        # The first poller looked dead: its lease ran out while it was still working, and a stand-in for
        # another poller's claim replaced its token (so its next renewal fails instead of reviving it).
        expired = timezone.now() - timedelta(days=1)
        ERPConnection.objects.filter(pk=zone.connection.pk).update(poll_claimed_until=expired,
                                                                   poll_claim_token=uuid.uuid4())
        second.go.touch()
        finish([first, second])
        first_result, second_result = first.results()[0], second.results()[0]

    assert first_result["claimed"] and second_result["claimed"], (first_result, second_result)
    if fair_locks():
        # The second found acks still in the dir: the two really were in it at the same time.
        assert second_result["outcomes"] or second_result["error"], second_result
    assert first_result["outcomes"].get("accepted", 0) + second_result["outcomes"].get("accepted", 0) == 500
    assert_each_ack_applied_once([zone], overlapped=True)
    print(f"overlap: first {first_result}, second {second_result}")
