"""/metrics: the Prometheus text format, computed at scrape time from the database and cached briefly.

Two sources, both in the database, so every web process shows the same numbers whichever machine did the
work: the state (``gauges.read``: exports, ages, connections, the queue) and each engine's tallies written
with its heartbeat (``tallies``), exposed per engine under the ``engine`` label (``sum without (engine)``
adds them up).  Organization and connection labels are bounded by METRICS_LABEL_LIMIT: the organizations
(or connections) with the largest values keep their own label, the rest are folded into ``(other)``
(counts summed, ages and failures their maximum), so a fleet of thousands stays a few hundred series.
Nothing secret is read: slugs, connection names, counts, ages and error codes.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..models import AlertState
from ..work.engine import SILENT_AFTER_SECONDS
from . import broker, gauges
from .tallies import BUCKETS, cumulative

#: The text format every Prometheus reads (prometheus-client's newest default names a newer version).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "(other)"
_WORD = re.compile(r"^[a-z_]{1,40}$")  # an outcome key from a heartbeat row: ours, or left out
Key = tuple[str, ...]


def fold(values: Mapping[Key, float], *, limit: int, identity: int,
         combine: Callable[[Iterable[float]], float]) -> dict[Key, float]:
    """Keep the ``limit`` identities (the first ``identity`` labels: organization, or organization and
    connection) with the largest combined values; fold the others into ``(other)``, per remaining labels."""
    by_id: dict[Key, list[tuple[Key, float]]] = defaultdict(list)
    for key, value in values.items():
        by_id[key[:identity]].append((key, value))
    ranked = sorted(by_id, key=lambda ident: (-combine(v for _, v in by_id[ident]), ident))
    kept = set(ranked[:max(limit, 0)])
    out: dict[Key, float] = {}
    folded: dict[Key, list[float]] = defaultdict(list)
    for ident, items in by_id.items():
        for key, value in items:
            if ident in kept:
                out[key] = value
            else:
                folded[(OTHER,) * identity + key[identity:]].append(value)
    out.update({key: combine(vs) for key, vs in folded.items()})
    return out


def _gauge(name: str, doc: str, labels: list[str], values: Mapping[Key, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def state_families(state: gauges.State, limit: int) -> Iterator[Metric]:
    org = ["organization"]
    conn = ["organization", "connection"]
    yield _gauge("orderflow_exports", "Exports by status and organization.", [*org, "status"],
                 fold(state.exports, limit=limit, identity=1, combine=sum))
    yield _gauge("orderflow_oldest_pending_export_age_seconds",
                 "Age of the oldest export waiting to be delivered (PENDING), per organization.", org,
                 fold({(k,): v for k, v in state.oldest_pending.items()}, limit=limit, identity=1, combine=max))
    yield _gauge("orderflow_oldest_unanswered_export_age_seconds",
                 "Time since the oldest export still without the ERP's answer was delivered (SENT).", org,
                 fold({(k,): v for k, v in state.oldest_unanswered.items()}, limit=limit, identity=1, combine=max))
    yield _gauge("orderflow_failed_exports", "Exports whose delivery failed for good and that are still their "
                 "draft's current one (the delivery-failed alert).", org,
                 fold({(k,): v for k, v in state.failed.items()}, limit=limit, identity=1, combine=sum))
    yield _gauge("orderflow_connections", "ERP connections: active, draining (inactive, answers awaited), inactive.",
                 ["state"], {(k,): state.connection_states.get(k, 0) for k in ("active", "draining", "inactive")})
    polled = [(c.organization, c.name) for c in state.connections]
    yield _gauge("orderflow_connection_last_poll_success_age_seconds",
                 "Seconds since the connection's last successful poll (since it was created if none).", conn,
                 fold({k: c.poll_ok_age for k, c in zip(polled, state.connections, strict=True)}, limit=limit,
                      identity=2, combine=max))
    yield _gauge("orderflow_connection_poll_failures", "Polls failed in a row (0 once one works).", conn,
                 fold({k: c.poll_failures for k, c in zip(polled, state.connections, strict=True)}, limit=limit,
                      identity=2, combine=max))
    yield _gauge("orderflow_connection_fault", "1 while the connection's last operation failed, with the "
                 "fault's code ((other): how many connections).", [*conn, "code"],
                 fold({(*k, c.fault): 1 for k, c in zip(polled, state.connections, strict=True) if c.fault},
                      limit=limit, identity=2, combine=sum))
    yield _gauge("orderflow_connection_inbox_oldest_age_seconds", "Age of our oldest file the ERP has not taken "
                 "from its inbox yet (by orderflow's clock).", conn,
                 fold({k: c.inbox_oldest_age for k, c in zip(polled, state.connections, strict=True)
                       if c.inbox_oldest_age is not None}, limit=limit, identity=2, combine=max))
    conditions = [c for c in AlertState.Condition.values if c != AlertState.Condition.DIGEST]
    yield _gauge("orderflow_alerts_active", "Connections whose alert (mailed by orderflow) is on, per condition.",
                 ["condition"], {(c,): state.alerts.get(c, 0) for c in conditions})
    yield _gauge("orderflow_queue_jobs", "Polls and delivery slices due and not started (the engines' queue).",
                 [], {(): state.queue_jobs})
    yield _gauge("orderflow_queue_oldest_seconds", "How long the oldest due job has waited.", [],
                 {(): state.queue_oldest})


def engine_families(rows: list[dict[str, Any]], now: datetime) -> Iterator[Metric]:
    """Each recent engine's heartbeat and tallies, labelled by engine (host:pid)."""
    alive = {r["name"] for r in rows
             if r["stopped_at"] is None and (now - r["seen_at"]).total_seconds() <= SILENT_AFTER_SECONDS}
    yield _gauge("orderflow_engines_alive", "Dropzone engines (one per qcluster process) with a recent heartbeat.",
                 [], {(): len(alive)})
    up = GaugeMetricFamily("orderflow_engine_up", "1 while the engine's heartbeat is recent.", labels=["engine"])
    sessions = GaugeMetricFamily("orderflow_engine_sessions", "Partner jobs the engine may run at once.",
                                 labels=["engine"])
    busy = GaugeMetricFamily("orderflow_engine_busy_sessions", "Partner jobs in flight at its last heartbeat.",
                             labels=["engine"])
    age = GaugeMetricFamily("orderflow_engine_heartbeat_age_seconds", "Seconds since its last heartbeat.",
                            labels=["engine"])
    counters = {
        "polls": CounterMetricFamily("orderflow_polls", "Polls by outcome (ok, failed, cut_off, interrupted, "
                                     "skipped).", labels=["engine", "outcome"]),
        "deliveries": CounterMetricFamily("orderflow_deliveries", "Delivery slices (jobs) by outcome.",
                                          labels=["engine", "outcome"]),
        "delivery_files": CounterMetricFamily("orderflow_delivery_files", "Exports a delivery handled, by result "
                                              "(sent, retrying, failed, lost).", labels=["engine", "result"]),
        "ack_files": CounterMetricFamily("orderflow_ack_files", "ERP answer files handled, by outcome.",
                                         labels=["engine", "outcome"]),
    }
    moved = {"delivery_bytes": CounterMetricFamily("orderflow_delivery_bytes", "Bytes of the files delivered.",
                                                   labels=["engine"]),
             "ack_bytes": CounterMetricFamily("orderflow_ack_bytes", "Bytes of the answer files read.",
                                              labels=["engine"])}
    durations = {"poll_seconds": HistogramMetricFamily("orderflow_poll_duration_seconds", "How long polls took.",
                                                       labels=["engine"]),
                 "delivery_seconds": HistogramMetricFamily("orderflow_delivery_duration_seconds",
                                                           "How long delivery slices took.", labels=["engine"])}
    for row in sorted(rows, key=lambda r: r["name"]):
        name = row["name"]
        up.add_metric([name], float(name in alive))
        sessions.add_metric([name], row["sessions"])
        busy.add_metric([name], row["busy"])
        age.add_metric([name], max((now - row["seen_at"]).total_seconds(), 0.0))
        snapshot = row["metrics"] if isinstance(row["metrics"], dict) else {}
        for key, family in counters.items():
            for outcome, n in sorted((snapshot.get(key) or {}).items()):
                if _WORD.match(str(outcome)) and isinstance(n, int | float):
                    family.add_metric([name, outcome], n)
        for key, family in moved.items():
            family.add_metric([name], float(snapshot.get(key) or 0))
        bounds = snapshot.get("le") or list(BUCKETS)
        for key, family in durations.items():
            histogram = cumulative(snapshot.get(key) or {}, bounds) if isinstance(bounds, list) else None
            if histogram is not None:
                family.add_metric([name], histogram[0], histogram[1])
    yield from (up, sessions, busy, age, *counters.values(), *moved.values(), *durations.values())


def broker_families(seen: broker.BrokerState) -> Iterator[Metric]:
    yield _gauge("orderflow_broker_up", "1 when django-q2's broker answers.", ["kind"], {(seen.kind,): seen.up})
    if seen.queued is not None:
        yield _gauge("orderflow_broker_queued_tasks", "django-q2 tasks waiting in the broker.", [], {(): seen.queued})
    if seen.clusters is not None:
        yield _gauge("orderflow_q_clusters", "django-q2 clusters that reported lately (Redis broker only).", [],
                     {(): seen.clusters})
        yield _gauge("orderflow_q_workers", "Their worker processes.", [], {(): seen.workers or 0})


class Collector:
    """prometheus-client's collector interface over the database; one scrape, one read."""

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        now = timezone.now()
        state = gauges.read(now)
        yield from state_families(state, settings.METRICS_LABEL_LIMIT)
        yield from engine_families(state.engines, now)
        yield from broker_families(broker.look())
        yield _gauge("orderflow_scrape_collect_seconds", "How long reading this page's numbers took.", [],
                     {(): time.perf_counter() - started})


_lock = threading.Lock()
_cached: tuple[float, bytes] | None = None


def render() -> bytes:
    """The page, computed at most once per METRICS_CACHE_SECONDS in this process (a scrape interval)."""
    global _cached
    with _lock:  # one computation at a time; concurrent scrapes get its result
        if _cached is not None and time.monotonic() < _cached[0]:
            return _cached[1]
        body = generate_latest(Collector())  # type: ignore[arg-type]
        _cached = (time.monotonic() + settings.METRICS_CACHE_SECONDS, body)
        return body


def forget() -> None:
    """Drop the cached page (tests; a changed setting)."""
    global _cached
    with _lock:
        _cached = None

