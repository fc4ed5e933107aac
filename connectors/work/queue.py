"""What is waiting to be done, and in which order: the engine's queue is the set of due rows.

A connection is due for a poll when its ``next_poll_at`` has come, and for a delivery when it has a PENDING
export whose ``next_attempt_at`` has come; either only while nobody holds that kind of claim on it.  So the
queue never holds more than two jobs per connection, and nothing waits behind a job of the same connection.
When more is due than there are free session threads, ``pick`` takes it round robin by organization, the
longest-waiting first, and lets connections whose last job failed ("suspects") fill at most their share.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db.models import F, Min
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..inbound.polling import due_connections
from ..outbound.delivery import due_exports
from .claims import Kind, unclaimed


@dataclass(frozen=True)
class Due:
    kind: Kind
    connection_id: int
    organization_id: int
    since: datetime  # due since (the longest-waiting go first)
    suspect: bool = False  # its last job failed or was cut off


def due_polls(now: datetime, *, limit: int) -> list[Due]:
    rows = (due_connections(now).order_by(F("next_poll_at").asc(nulls_first=True), "pk")
            .values_list("pk", "organization_id", "next_poll_at", "created_at", "poll_failures")[:limit])
    return [Due(Kind.POLL, pk, org, since or created, suspect=failures > 0)
            for pk, org, since, created, failures in rows]


def due_deliveries(now: datetime, *, limit: int) -> list[Due]:
    rows = (due_exports(now).filter(unclaimed(Kind.DELIVERY, now, via="connection"))
            .values("connection_id", "connection__organization_id", "connection__last_error_code")
            .annotate(since=Min("next_attempt_at")).order_by("since")[:limit])
    return [Due(Kind.DELIVERY, row["connection_id"], row["connection__organization_id"], row["since"] or now,
                suspect=bool(row["connection__last_error_code"])) for row in rows]


def pick(due: list[Due], *, free: int, suspects_free: int) -> list[Due]:
    """Up to ``free`` jobs, one per organization per round (oldest first), at most ``suspects_free`` suspects."""
    by_org: dict[int, list[Due]] = defaultdict(list)
    for item in sorted(due, key=lambda d: d.since):
        by_org[item.organization_id].append(item)
    chosen: list[Due] = []
    while len(chosen) < free and by_org:
        # Each round: every organization's longest-waiting job, the organizations ordered by that job's wait.
        heads = sorted(by_org, key=lambda org: by_org[org][0].since)
        for org in heads:
            item = by_org[org].pop(0)
            if not by_org[org]:
                del by_org[org]
            if item.suspect:
                if suspects_free <= 0:
                    continue
                suspects_free -= 1
            chosen.append(item)
            if len(chosen) == free:
                break
    return chosen


@dataclass(frozen=True)
class Waiting:
    """What the admin's home page shows: work due and not started, and how long the oldest has waited."""

    count: int
    oldest: datetime | None

    @property
    def oldest_seconds(self) -> float | None:
        return None if self.oldest is None else max((timezone.now() - self.oldest).total_seconds(), 0.0)


def waiting(connection_ids: list[int] | None = None) -> Waiting:
    now = timezone.now()
    polls = due_connections(now)
    exports = due_exports(now).filter(unclaimed(Kind.DELIVERY, now, via="connection"))
    if connection_ids is not None:
        polls, exports = polls.filter(pk__in=connection_ids), exports.filter(connection_id__in=connection_ids)
    poll_oldest = polls.aggregate(oldest=Min(Coalesce("next_poll_at", "created_at")))["oldest"]
    delivery = exports.aggregate(oldest=Min("next_attempt_at"))
    oldest = min((t for t in (poll_oldest, delivery["oldest"]) if t is not None), default=None)
    return Waiting(count=polls.count() + exports.values("connection_id").distinct().count(), oldest=oldest)
