"""What one /metrics scrape costs with a big installation: 1,000 connections, 100,000 exports.

Run from the repository root::

    .venv/bin/python bench/scrape.py [--connections 1000] [--exports 100000] [--engines 4] [--repeat 5]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/scrape.py

Set-up (untimed): one organization per connection, each with an active connection and its share of
the exports (85 % confirmed, 5 % sent and awaiting an answer, 4 % pending, 3 % failed, 2 % rejected,
1 % cancelled); a tenth of the connections failing their polls, some with our files left in the ERP's
inbox, a few alerts on, and ``--engines`` heartbeat rows with tallies.  Then, in this process:

- a scrape computed afresh (``Collector`` + the text format): wall time, its queries and their time,
  the page's size and series, with METRICS_LABEL_LIMIT 100 (the default) and 1000 (no folding);
- a scrape within the cache interval (what a second Prometheus, or a retry, costs);
- /readyz, through Django's test client (every check).

The database is the bench's own (a temp SQLite file, or a fresh PostgreSQL database when DATABASE_URL
is set, dropped at the end).  The figures are this machine's, printed, never asserted by a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.pipeline import setup_django  # noqa: E402
from bench.pipeline_support import QueryCounter, own_database  # noqa: E402

MIX = (("ACKED", 85), ("SENT", 5), ("PENDING", 4), ("FAILED", 3), ("REJECTED", 2), ("CANCELLED", 1))


def populate(connections: int, exports: int, engines: int) -> None:
    from django.utils import timezone

    from connectors.models import AlertState, EngineProcess, ERPConnection, ERPExport
    from connectors.observability.tallies import WorkTally
    from connectors.work.budget import Budget
    from orderflow.models import DraftOrder, Organization

    now = timezone.now()
    orgs = Organization.objects.bulk_create(Organization(slug=f"org-{n:04d}", name=f"Org {n}")
                                            for n in range(connections))
    conns = ERPConnection.objects.bulk_create(
        ERPConnection(organization=org, name="ERP", transport="local", is_active=True, export_path=f"/z/{n}/in",
                      ack_path=f"/z/{n}/out", last_poll_at=now, last_poll_ok=n % 10 != 0,
                      last_poll_ok_at=now - dt.timedelta(seconds=n % 600), poll_failures=3 if n % 10 == 0 else 0,
                      last_error_code="network" if n % 10 == 0 else "", next_poll_at=now + dt.timedelta(minutes=1),
                      inbox_seen={f"f{k}.json": time.time() - 60 * k for k in range(5)} if n % 20 == 0 else {})
        for n, org in enumerate(orgs))
    AlertState.objects.bulk_create(AlertState(connection=c, condition="poll_failing", active=True)
                                   for c in conns[::10])
    statuses = [status for status, share in MIX for _ in range(share)]
    chunk = 5000
    for start in range(0, exports, chunk):
        drafts = DraftOrder.objects.bulk_create(
            DraftOrder(organization=orgs[n % connections], order_number=f"PO-{n:06d}",
                       order_date=dt.date(2026, 11, 20), customer_number="C-1", customer_name="Müller",
                       status="PUSHED") for n in range(start, min(start + chunk, exports)))
        rows = []
        for offset, draft in enumerate(drafts):
            n = start + offset
            status = statuses[n % len(statuses)]
            sent = now - dt.timedelta(minutes=n % 1440) if status in ("SENT", "ACKED", "REJECTED") else None
            rows.append(ERPExport(draft=draft, connection=conns[n % connections], status=status,
                                  filename=f"f{n}.json", payload_size=900, sent_at=sent,
                                  next_attempt_at=now + dt.timedelta(hours=1) if status == "PENDING" else None))
        ERPExport.objects.bulk_create(rows)
    for n in range(engines):  # each engine's tallies, as its heartbeat writes them
        tally = WorkTally()
        for k in range(200):
            budget = Budget(60)
            budget.started -= (k % 40) / 10  # a spread of durations
            tally.job_done("poll" if k % 2 else "delivery", None, budget)
        EngineProcess.objects.create(name=f"worker-{n}:1{n:03d}", host=f"worker-{n}", pid=1000 + n,
                                     started_at=now, seen_at=now, sessions=16, busy=n, metrics=tally.snapshot())


def measure(repeat: int, limit: int) -> dict[str, float]:
    from django.conf import settings
    from django.db import connection
    from prometheus_client import generate_latest

    from connectors.observability.metrics import Collector

    settings.METRICS_LABEL_LIMIT = limit
    walls, queries, query_seconds, body = [], [], [], b""
    for _ in range(repeat):
        counter = QueryCounter()
        with connection.execute_wrapper(counter):
            started = time.perf_counter()
            body = generate_latest(Collector())  # type: ignore[arg-type]
            walls.append(time.perf_counter() - started)
        queries.append(counter.total)
        query_seconds.append(counter.seconds)
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    return {"wall": statistics.median(walls), "best": min(walls), "queries": queries[-1],
            "query_s": statistics.median(query_seconds), "bytes": len(body), "series": series}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--exports", type=int, default=100_000)
    parser.add_argument("--engines", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="orderflow-scrape-"))
    with own_database(scratch) as db_url:
        setup_django(db_url, scratch)
        from django.conf import settings
        from django.db import connection
        from django.test import Client

        from connectors.observability import metrics
        from connectors.work.schedules import ensure_schedules

        started = time.perf_counter()
        populate(args.connections, args.exports, args.engines)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        print(f"scrape cost: {connection.vendor}, {args.connections:,} connections, {args.exports:,} exports, "
              f"{args.engines} engines (set up in {time.perf_counter() - started:.0f} s)")
        for limit in (100, 1000):
            m = measure(args.repeat, limit)
            print(f"  afresh, METRICS_LABEL_LIMIT={limit:<5} median {m['wall'] * 1000:7.1f} ms (best "
                  f"{m['best'] * 1000:.1f}), {m['queries']} queries taking {m['query_s'] * 1000:.1f} ms, "
                  f"{m['series']:,} series, {m['bytes'] / 1024:.0f} KiB")
        settings.METRICS_LABEL_LIMIT, settings.METRICS_CACHE_SECONDS, settings.METRICS_PUBLIC = 100, 60, True
        settings.ALLOWED_HOSTS = ["testserver"]
        client = Client()
        metrics.forget()
        client.get("/metrics")  # computes and caches
        cached = []
        for _ in range(args.repeat * 20):
            started = time.perf_counter()
            assert client.get("/metrics").status_code == 200
            cached.append(time.perf_counter() - started)
        print(f"  cached (within METRICS_CACHE_SECONDS): median {statistics.median(cached) * 1000:.2f} ms per scrape")
        ensure_schedules()
        from django.utils import timezone

        from connectors.models import EngineProcess

        EngineProcess.objects.update(seen_at=timezone.now())  # alive: every check passes
        assert client.get("/readyz").status_code == 200
        ready = []
        counter = QueryCounter()
        with connection.execute_wrapper(counter):
            for _ in range(args.repeat * 4):
                started = time.perf_counter()
                client.get("/readyz")
                ready.append(time.perf_counter() - started)
        print(f"  /readyz: median {statistics.median(ready) * 1000:.2f} ms, "
              f"{counter.total // len(ready)} queries per call")


if __name__ == "__main__":
    main()
