"""Helpers of bench/latency.py: percentiles, the poll timeline an ack waited through, the report.

Nothing here imports Django: the per-broker child configures Django first, and the parent never does.
The ack side's times are wall-clock seconds (``time.time()``), so they line up with the timestamps
the cluster writes to the database (django-q2's Task rows).
"""

from __future__ import annotations

import ctypes
import os
import select
import statistics
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


# -- figures ---------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between the two nearest ranks."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def figures(values: list[float]) -> dict[str, float]:
    top = max(values, default=float("nan"))
    return {"n": len(values), "p50": pct(values, 0.5), "p90": pct(values, 0.9), "max": top}


def verdict(p50: float, target: float) -> str:
    if p50 != p50:  # NaN: nothing measured
        return "not measured"
    if p50 <= target:
        return f"met ({p50 / target:.0%} of the target)"
    return f"MISSED by {p50 - target:.1f} s ({p50 / target:.2f}x the target)"


def line(label: str, f: dict[str, float], target: float, unit_digits: int = 2) -> str:
    d = unit_digits
    return (
        f"  {label:<38} p50 {f['p50']:>6.{d}f} s   p90 {f['p90']:>6.{d}f} s   max {f['max']:>6.{d}f} s   "
        f"(n={f['n']})   target p50 <= {target:g} s: {verdict(f['p50'], target)}"
    )


# -- one delivery ------------------------------------------------------------------------------------
@dataclass
class Delivery:
    """One approve -> file, in seconds from the start of ``push_drafts``."""

    latency: float | None  # the file (final name) seen in the export dir; None: not within the timeout
    pushed: float  # push_drafts() returned: the transaction committed
    taken: float | None  # the engine claimed the export (it found it due at its tick)


def delivery_breakdown(runs: list[Delivery]) -> str:
    done = [r for r in runs if r.latency is not None and r.taken is not None]
    if not done:
        return "  (no breakdown: nothing delivered)"
    push = statistics.median(r.pushed for r in done)
    wait = statistics.median(max(r.taken - r.pushed, 0.0) for r in done)  # type: ignore[operator]
    work = statistics.median(r.latency - r.taken for r in done)  # type: ignore[operator]
    return (
        f"  where the time goes (medians): push_drafts() with commit {push * 1000:.0f} ms; until the engine's "
        f"next look (CONNECTOR_TICK_SECONDS) {wait * 1000:.0f} ms; claimed -> file renamed into place "
        f"(render, archive, upload) {work * 1000:.0f} ms"
    )


# -- the ack side's timeline ---------------------------------------------------------------------------
IN_ACCESS, IN_MOVED_FROM, IN_DELETE, IN_ISDIR, IN_NONBLOCK, IN_CLOEXEC = 0x1, 0x40, 0x200, 0x40000000, 0o4000, 0o2000000


class DirWatch:
    """What the poller does to the ack dir, seen through inotify (Linux), stamped with our clock.

    Listing a directory is a getdents() on it: IN_ACCESS on the watched directory itself (no
    name).  Reading an ack file is IN_ACCESS with its name; filing it away to processed/ is
    IN_MOVED_FROM (rename) or IN_DELETE (link + unlink, as the local transport and OpenSSH's
    sftp-server do without overwriting).  Both transports touch this very directory on this disk,
    so the poller needs no change to be observed.  A thread blocks on the inotify descriptor and
    stamps each batch as it arrives.
    """

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, os.fsencode(path), IN_ACCESS | IN_MOVED_FROM | IN_DELETE) < 0:
            raise SystemExit(f"latency: inotify on {path} failed (errno {ctypes.get_errno()})")
        self.events: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ack-dir-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            now = time.time()
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            i = 0
            while i + 16 <= len(buf):
                _wd, mask, _cookie, size = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16 : i + 16 + size].rstrip(b"\0").decode(errors="replace")
                self.events.append((now, mask, name))
                i += 16 + size

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self.fd)

    def listings(self) -> list[float]:
        """When the ack dir was listed (one getdents burst within 0.2 s counts once)."""
        out: list[float] = []
        for t, mask, name in self.events:
            if mask & IN_ACCESS and mask & IN_ISDIR and not name and (not out or t - out[-1] > 0.2):
                out.append(t)
        return out

    def first(self, name: str, mask: int) -> float | None:
        return next((t for t, m, n in self.events if n == name and m & mask), None)


@dataclass
class Ack:
    n: int
    name: str
    written: float  # the rename into the ack dir
    confirmed: float | None = None  # first seen CONFIRMED (50 ms sampling)
    listed: float | None = None  # the first listing of the ack dir after the write
    read: float | None = None  # the poller read the file
    filed: float | None = None  # the poller moved it to processed/

    @property
    def latency(self) -> float | None:
        return None if self.confirmed is None else self.confirmed - self.written

    def trace(self, watch: DirWatch) -> None:
        self.listed = next((t for t in watch.listings() if t >= self.written), None)
        self.read = watch.first(self.name, IN_ACCESS)
        self.filed = watch.first(self.name, IN_MOVED_FROM | IN_DELETE)


def _s(t: float | None, base: float | None, fmt: str = "{:+6.1f}") -> str:
    return fmt.format(t - base) if (t is not None and base is not None) else "-"


def ack_table(acks: list[Ack], t0: float) -> list[str]:
    """Per ack, in seconds: written (from the ack phase's start), then each step after the previous one."""
    out = ["   #  written  | first listing  read   filed  CONFIRMED | latency   (each step: seconds after the one "
           "before it)"]
    for a in acks:
        lat = f"{a.latency:6.1f} s" if a.latency is not None else " timeout"
        out.append(
            f"  {a.n:>2}  {a.written - t0:+7.1f}  | {_s(a.listed, a.written):>13} {_s(a.read, a.listed):>6} "
            f"{_s(a.filed, a.read, '{:+6.2f}'):>6} {_s(a.confirmed, a.filed, '{:+6.2f}'):>10} | {lat}"
        )
    return out


def decompose(acks: list[Ack], min_age: float) -> str:
    traced = [a for a in acks if None not in (a.listed, a.read, a.confirmed)]
    if not traced:
        return "  (no decomposition: no ack was traced from its first listing to CONFIRMED)"
    until = [a.listed - a.written for a in traced]  # type: ignore[operator]
    aging = [a.read - a.listed for a in traced]  # type: ignore[operator]
    rest = [a.confirmed - a.read for a in traced]  # type: ignore[operator]
    return (
        f"  where the time goes (medians over {len(traced)} acks): until the poller first lists the ack dir "
        f"{statistics.median(until):.1f} s (p90 {pct(until, 0.9):.1f} s, max {max(until):.1f} s); first listing -> "
        f"file read {statistics.median(aging):.1f} s (min_ack_age_seconds={min_age:g}: our clock starts at the "
        f"first sight; p90 {pct(aging, 0.9):.1f} s, max {max(aging):.1f} s); read -> seen CONFIRMED "
        f"{statistics.median(rest) * 1000:.0f} ms (apply, file away, our 50 ms sampling)"
    )


def timeline(listings: list[float], t0: float, t1: float, interval: float) -> list[str]:
    """The engine's listings of the ack dir while acks were written, and the gaps between them."""
    inside = [t for t in listings if t0 - 70 <= t <= t1]
    gaps = [b - a for a, b in zip(inside, inside[1:], strict=False)]
    if not gaps:
        return []
    long = [g for g in gaps if g > interval * 1.5]
    span = max(t1 - t0, 1e-9)
    return [f"  the ack dir was listed {len(inside)}x: between listings median {statistics.median(gaps):.1f} s, "
            f"longest {max(gaps):.1f} s; {len(long)} gaps over {interval * 1.5:g} s, together {sum(long):.0f} s "
            f"= {sum(long) / span:.0%} of the ack phase"]


# -- the parent's summary ----------------------------------------------------------------------------------
def summary_lines(results: list[dict[str, Any]], targets: tuple[float, float]) -> list[str]:
    d_target, a_target = targets
    out = [
        f"{'broker':<8}{'approve -> file: p50':>22}{'p90':>8}{'max':>8}   {'verdict (<= ' + str(d_target) + ' s)':<34}"
        f"{'ack -> CONFIRMED: p50':>22}{'p90':>8}{'max':>8}   verdict (<= {a_target:g} s)"
    ]
    for r in results:
        d, a = r["delivery"], r["ack"]
        out.append(
            f"{r['broker']:<8}{d['p50']:>20.2f} s{d['p90']:>6.2f} s{d['max']:>6.2f} s   "
            f"{verdict(d['p50'], d_target):<34}"
            f"{a['p50']:>20.1f} s{a['p90']:>6.1f} s{a['max']:>6.1f} s   {verdict(a['p50'], a_target)}"
        )
    return out
