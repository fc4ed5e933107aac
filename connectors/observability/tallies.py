"""What one dropzone engine did since it started: counters and duration histograms, kept with its heartbeat.

Why in the database and not in prometheus-client's own objects: the work is done by engines in any number of
``qcluster`` processes on any number of machines, and /metrics is answered by a web process elsewhere.
prometheus-client's multiprocess mode adds up processes sharing one directory on one machine only.  So each
engine keeps plain tallies in memory, writes them into its ``EngineProcess`` row with every heartbeat (5 s),
and /metrics exposes each engine's as series labelled ``engine``; ``sum without (engine) (...)`` adds them
up, and a restarted engine is a new series (or a counter reset), which ``rate()``/``increase()`` handle.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ..inbound.polling import PollReport
from ..outbound.delivery import DeliveryReport
from ..work.budget import Budget

#: Upper bounds (seconds) of the job-duration buckets; a job's budget is 60 s by default.
BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
VERSION = 1  # of the snapshot's shape (tallies.py writes it, metrics.py reads it)


def job_outcome(report: object, budget: Budget, *, raised: bool) -> str:
    """ok, failed, cut_off (the partner overran the budget), interrupted (the engine stopped), skipped."""
    if budget.stopped:
        return "interrupted"
    if budget.cut_off.is_set():
        return "cut_off"
    if raised:
        return "failed"
    if isinstance(report, PollReport):
        return "failed" if report.error else "ok"
    if isinstance(report, DeliveryReport):
        return "failed" if report.retrying or report.failed else "ok"
    return "skipped"  # the connection was gone or switched off when the job began


class WorkTally:
    """Thread-safe: the session threads record, the keeper thread takes snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {"polls": {}, "deliveries": {}, "delivery_files": {},
                                                   "ack_files": {}}
        self._bytes = {"delivery_bytes": 0, "ack_bytes": 0}
        self._seconds = {kind: {"buckets": [0] * (len(BUCKETS) + 1), "sum": 0.0}
                         for kind in ("poll_seconds", "delivery_seconds")}

    def job_done(self, kind: str, report: object, budget: Budget, *, raised: bool = False) -> None:
        """Count one finished job (``kind``: poll or delivery) and what it moved."""
        outcome = job_outcome(report, budget, raised=raised)
        seconds = max(budget.elapsed(), 0.0)
        with self._lock:
            self._add("polls" if kind == "poll" else "deliveries", outcome)
            histogram = self._seconds[f"{kind}_seconds"]
            histogram["buckets"][_bucket(seconds)] += 1
            histogram["sum"] += seconds
            if isinstance(report, DeliveryReport):
                for result, n in (("sent", len(report.sent)), ("retrying", len(report.retrying)),
                                  ("failed", len(report.failed)), ("lost", report.lost)):
                    self._add("delivery_files", result, n)
                self._bytes["delivery_bytes"] += report.bytes_sent
            elif isinstance(report, PollReport):
                for result, n in report.outcomes.items():
                    if result != "waiting":  # seen, not read yet: counted once it is handled
                        self._add("ack_files", result, n)
                self._bytes["ack_bytes"] += report.bytes_read

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON for the heartbeat row."""
        with self._lock:
            return {"v": VERSION, "le": list(BUCKETS), **{k: dict(v) for k, v in self._counts.items()},
                    **self._bytes, **{k: {"buckets": list(v["buckets"]), "sum": v["sum"]}
                                      for k, v in self._seconds.items()}}

    def _add(self, family: str, key: str, n: int = 1) -> None:
        if n:
            counts = self._counts[family]
            counts[key] = counts.get(key, 0) + n


def _bucket(seconds: float) -> int:
    for index, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return index
    return len(BUCKETS)  # +Inf


def cumulative(histogram: Mapping[str, Any], bounds: list[float]) -> tuple[list[tuple[str, float]], float] | None:
    """A snapshot's histogram as Prometheus buckets (``le`` -> count so far, +Inf last) and its sum; None when
    the snapshot is malformed (a row written by hand, or by another version)."""
    counts = histogram.get("buckets") if isinstance(histogram, Mapping) else None
    if not isinstance(counts, list) or len(counts) != len(bounds) + 1:
        return None
    total, buckets = 0, []
    for bound, n in zip([*(str(float(b)) for b in bounds), "+Inf"], counts, strict=True):
        total += int(n)
        buckets.append((bound, float(total)))
    return buckets, float(histogram.get("sum") or 0.0)
