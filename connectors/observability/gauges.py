"""The state /metrics shows, read from the database at scrape time: a handful of grouped queries.

Counts and ages are computed where the rows are (any web process sees every machine's work), grouped by
organization or connection; ``metrics`` bounds the labels.  Cheap enough to run once per scrape interval
with 100,000 exports and 1,000 connections (bench/scrape.py measures it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Exists, Min, OuterRef, QuerySet
from django.utils import timezone

from ..models import AlertState, EngineProcess, ERPConnection, ERPExport
from ..services.lifecycle import AWAITING_ANSWER
from ..work.queue import waiting

S = ERPExport.Status
#: Engines stopped or silent for longer than this drop out of /metrics (their last tallies were scraped).
ENGINE_SERIES_MINUTES = 15
MAX_ENGINES = 100  # a bound on ``engine`` label values, whatever happened in the last minutes


@dataclass
class Connection:
    organization: str  # slug
    name: str
    poll_ok_age: float  # seconds since its last successful poll (or since it was created)
    poll_failures: int
    fault: str  # ErrorCode of the last operation's fault, "" when it worked
    inbox_oldest_age: float | None  # our oldest file still in the ERP's inbox, by our clock


@dataclass
class State:
    exports: dict[tuple[str, str], int] = field(default_factory=dict)  # (organization, status) -> count
    oldest_pending: dict[str, float] = field(default_factory=dict)  # organization -> seconds
    oldest_unanswered: dict[str, float] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)  # organization -> FAILED exports still current
    connections: list[Connection] = field(default_factory=list)  # active or draining
    connection_states: dict[str, int] = field(default_factory=dict)  # active / draining / inactive -> count
    alerts: dict[str, int] = field(default_factory=dict)  # condition -> connections with it on
    queue_jobs: int = 0
    queue_oldest: float = 0.0
    engines: list[dict[str, Any]] = field(default_factory=list)  # recent EngineProcess rows


def read(now: datetime | None = None) -> State:
    now = now or timezone.now()
    state = State()
    connections = list(ERPConnection.objects.values_list(
        "pk", "organization__slug", "name", "is_active", "last_poll_ok_at", "created_at", "poll_failures",
        "last_error_code", "inbox_seen").order_by())
    by_connection = _exports(state, now, owner={row[0]: row[1] for row in connections})
    _connections(state, now, connections, by_connection)
    state.alerts = dict(AlertState.objects.filter(active=True).exclude(condition=AlertState.Condition.DIGEST)
                        .values("condition").annotate(n=Count("pk")).values_list("condition", "n").order_by())
    queue = waiting()
    state.queue_jobs, state.queue_oldest = queue.count, queue.oldest_seconds or 0.0
    state.engines = list(EngineProcess.objects.filter(seen_at__gte=now - timedelta(minutes=ENGINE_SERIES_MINUTES))
                         .order_by("-seen_at").values("name", "seen_at", "stopped_at", "sessions", "busy",
                                                      "metrics")[:MAX_ENGINES])
    return state


def _exports(state: State, now: datetime, *, owner: dict[int, str]) -> dict[int, dict[str, int]]:
    """Exports by connection and status in one pass over the export table alone (no join: the organization
    comes from the connection, ``owner``); those still without a connection by their draft's organization.
    Returns connection id -> status -> count (``_connections`` reads which are draining from it)."""
    by_connection: dict[int, dict[str, int]] = {}
    rows = []
    for conn_id, status, n, first_created, first_sent in _grouped(ERPExport.objects.exclude(connection=None),
                                                                  "connection_id"):
        by_connection.setdefault(conn_id, {})[status] = n
        rows.append((owner.get(conn_id, str(conn_id)), status, n, first_created, first_sent))
    rows += _grouped(ERPExport.objects.filter(connection=None), "draft__organization__slug")
    for slug, status, n, first_created, first_sent in rows:
        state.exports[(slug, status)] = state.exports.get((slug, status), 0) + n
        if status == S.PENDING and first_created:
            state.oldest_pending[slug] = max(state.oldest_pending.get(slug, 0.0), _age(now, first_created))
        if status == S.SENT and first_sent:
            state.oldest_unanswered[slug] = max(state.oldest_unanswered.get(slug, 0.0), _age(now, first_sent))
    newer = ERPExport.objects.filter(draft_id=OuterRef("draft_id"), created_at__gt=OuterRef("created_at"))
    for conn_id, n in (ERPExport.objects.filter(status=S.FAILED).exclude(Exists(newer)).values("connection_id")
                       .annotate(n=Count("pk")).values_list("connection_id", "n").order_by()):
        slug = owner.get(conn_id, str(conn_id))
        state.failed[slug] = state.failed.get(slug, 0) + n
    return by_connection


def _grouped(exports: QuerySet[ERPExport], key: str) -> list[tuple[Any, str, int, datetime | None, datetime | None]]:
    return list(exports.values(key, "status").annotate(n=Count("pk"), first_created=Min("created_at"),
                                                       first_sent=Min("sent_at"))
                .values_list(key, "status", "n", "first_created", "first_sent").order_by())


def _connections(state: State, now: datetime, rows: list[tuple], exports: dict[int, dict[str, int]]) -> None:
    clock = time.time()  # inbox_seen is by our clock, in epoch seconds
    for pk, slug, name, active, ok_at, created, failures, code, inbox in rows:
        draining = any(exports.get(pk, {}).get(status) for status in AWAITING_ANSWER)
        kind = "active" if active else "draining" if draining else "inactive"
        state.connection_states[kind] = state.connection_states.get(kind, 0) + 1
        if kind == "inactive":
            continue  # not polled: its age and failures mean nothing
        seen = [v for v in (inbox or {}).values() if isinstance(v, int | float) and not isinstance(v, bool)] \
            if isinstance(inbox, dict) else []
        state.connections.append(Connection(
            organization=slug, name=name, poll_ok_age=_age(now, ok_at or created), poll_failures=failures,
            fault=code, inbox_oldest_age=max(clock - min(seen), 0.0) if seen else None))


def _age(now: datetime, then: datetime) -> float:
    return max((now - then).total_seconds(), 0.0)
