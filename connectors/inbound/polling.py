"""Ack polling (dropzone JSON v1 §3–§5): read ack/error files, apply them, file them away.

Each run claims a connection with a conditional UPDATE and a short lease it
renews while it works, so any number of clusters split the connections and
never poll one at once.  Acks are handled in chunks: read over the
transport's lanes, applied in one transaction (a bad one isolated), then
moved.  An ack is applied *before* its file is moved; if the move fails, the
next poll finds the export already answered and files the ack as a
duplicate: nothing is applied twice.

A file is read only once our own observations show it unchanged (size and
mtime) for ``min_ack_age_seconds`` by our clock; server clocks never matter.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from ..contract.acks import ACK_MAX_BYTES, MalformedAck, classify_name, parse_ack
from ..models import ConnectorEvent, ERPConnection, ERPExport
from ..services.events import EventSpec, record_events
from ..services.lifecycle import AWAITING_ANSWER
from ..transports import ErrorCode, RemoteFile, Transport, TransportError
from ..work.leases import Lease, lease_until, new_token
from ..work.sessions import Session
from ..work.stop import StopCheck, never
from .answers import TO_FAILED, Handled, apply_acks

MAX_ACKS_PER_POLL = 2000  # one run ends well inside the task timeout; the rest is due again at once
CHUNK = 100  # acks read, applied (one transaction) and moved together
RECHECK_MAX_SECONDS = 15  # new files that will be old enough this soon are re-checked within the run
SCHEDULE_JITTER_SECONDS = 5  # a connection due this soon polls on this schedule run, not the next
# A poll task with a short interval keeps polling this long.  django-q2 looks at its schedules every 30 s, so
# the every-minute schedule fires 30 to 90 s apart: a task must outlast that or polls stop in between.  Two
# tasks that overlap are safe: each poll claims the connection, and the older task ends (the newer one took over).
POLL_TASK_SECONDS = 100
# Intervals below this are kept by poll tasks (above); the schedule starts a new one on every firing.
SHORT_INTERVAL_SECONDS = 60
INBOX_LOOK_SECONDS = 60  # a poll task lists the ERP's inbox (our export dir) at most this often
# Our clock for readiness (a seam for tests: waiting a minimum age for real would make them slow).
_clock: Callable[[], float] = time.time
_sleep: Callable[[float], None] = time.sleep


@dataclass
class PollReport:
    connection: str
    outcomes: dict[str, int] = field(default_factory=dict)
    error: str = ""
    code: str = ""  # the fault's ErrorCode when the poll failed
    more: bool = False  # files were left for the next run by MAX_ACKS_PER_POLL
    inbox: dict[str, float] | None = None  # our files still in the ERP's inbox -> first seen (our clock)

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n

    @property
    def handled(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k != "waiting")

    def __str__(self) -> str:
        if self.error:
            return f"{self.connection}: poll failed: {self.error}"
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items())) or "no ack files"
        return f"{self.connection}: {counts}"


def awaiting_answers() -> Exists:
    return Exists(ERPExport.objects.filter(connection=OuterRef("pk"), status__in=AWAITING_ANSWER))


def pollable() -> QuerySet[ERPConnection]:
    """Active connections, and inactive ones still draining: exports sent through them await an answer."""
    return ERPConnection.objects.filter(Q(is_active=True) | awaiting_answers())


def due_connections() -> QuerySet[ERPConnection]:
    now = timezone.now()
    soon = now + timedelta(seconds=SCHEDULE_JITTER_SECONDS)
    return pollable().filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=soon)).filter(
        Q(poll_claimed_until__isnull=True) | Q(poll_claimed_until__lt=now))


def connections_to_poll() -> QuerySet[ERPConnection]:
    """What the every-minute schedule starts a poll task for: the due connections, and every connection with a
    short interval, due or not, claimed or not (its running task hands over to the new one: no gap when it ends).
    """
    return pollable().filter(Q(pk__in=due_connections().values("pk"))
                             | Q(poll_interval_seconds__lt=SHORT_INTERVAL_SECONDS))


def claim_connection(*, connection_id: int, force: bool = False) -> uuid.UUID | None:
    """Claim a connection whose poll is due (``force``: any connection, due or not); None if someone has it."""
    now = timezone.now()
    token = new_token()
    unclaimed = Q(poll_claimed_until__isnull=True) | Q(poll_claimed_until__lt=now)
    if force:
        ids = [connection_id]
    else:
        ids = list(due_connections().filter(pk=connection_id).values_list("pk", flat=True))
    # The UPDATE re-checks the claim on the row itself (no join), so two pollers never both win.
    claimed = ERPConnection.objects.filter(unclaimed, pk__in=ids).update(
        poll_claim_token=token, poll_claimed_until=lease_until(now))
    return token if claimed else None


class _Observations:
    """What we saw of each file: ``name -> [size, mtime, first seen so (our clock), noted]``."""

    def __init__(self, stored: dict[str, Any], min_age: float) -> None:
        self.stored = stored
        self.min_age = min_age
        self.current: dict[str, list] = {}
        self.changed: list[str] = []  # seen before with other size/mtime: still being written

    def see(self, item: RemoteFile, now: float) -> float:
        """Record ``item``; returns when (our clock) it will have been unchanged for min_age."""
        before = self.current.get(item.name) or self.stored.get(item.name)
        if not (isinstance(before, list) and len(before) == 4):
            before = None  # first sight (or a listing stored by an older version)
        if before is not None and before[:2] == [item.size, item.mtime]:
            self.current[item.name] = before
        else:
            if before is not None and not before[3]:
                self.changed.append(item.name)
            self.current[item.name] = [item.size, item.mtime, now, before is not None]
        return self.current[item.name][2] + self.min_age


def _read(directory: str) -> Callable[[Transport, list[RemoteFile]], list[bytes | TransportError]]:
    def read(lane: Transport, items: list[RemoteFile]) -> list[bytes | TransportError]:
        return lane.read_many(directory, items, max_bytes=ACK_MAX_BYTES)

    return read


class _Poll:
    """One poll run of one connection over one open transport."""

    def __init__(self, conn: ERPConnection, transport: Transport, report: PollReport, lease: Lease,
                 should_stop: StopCheck = never, look_at_inbox: bool = True) -> None:
        self.conn, self.transport, self.report, self.lease = conn, transport, report, lease
        self.should_stop, self.look_at_inbox = should_stop, look_at_inbox
        self.seen = _Observations(conn.ack_listing, conn.min_ack_age_seconds)
        self.gone: set[str] = set()  # handled (moved) this run
        self.budget = MAX_ACKS_PER_POLL
        self.waiting: set[str] = set()  # seen in the last pass, not ready yet

    def run(self) -> dict[str, list]:
        if self.look_at_inbox:
            self._look_at_inbox()
        wait = self._pass()
        if wait is not None and wait <= RECHECK_MAX_SECONDS and self.budget:
            self._sleep(wait)  # new files become old enough soon: read them in this poll, not the next
            if not self.should_stop():
                self._pass()
        if self.waiting:
            self.report.count("waiting", len(self.waiting))  # not yet unchanged long enough by our clock
        return {n: v for n, v in self.seen.current.items() if n not in self.gone}

    def _look_at_inbox(self) -> None:
        """Which of our files the ERP has not taken yet (one listing): for "the ERP stopped consuming" alerts."""
        suffix, seen, now = self.transport.settings.temp_suffix, self.conn.inbox_seen or {}, _clock()
        names = [f.name for f in self.transport.list_dir(self.conn.export_path)
                 if f.name.endswith(".json") and not f.name.startswith(".") and not f.name.endswith(suffix)]
        self.report.inbox = {name: seen.get(name, now) for name in names}

    def _sleep(self, seconds: float) -> None:
        deadline = _clock() + seconds
        while (left := deadline - _clock()) > 0 and not self.should_stop():
            _sleep(min(left, 1.0))
            self._keep()

    def _keep(self) -> None:
        if not self.lease.keep():
            raise TransportError("the poll outlived its claim and another poller took over; stopped",
                                 code="claim_lost")

    def _pass(self) -> float | None:
        """List, handle what is ready; seconds until the next waiting file is ready (None: none waits)."""
        listing = [f for f in self.transport.list_dir(self.conn.ack_path) if classify_name(f.name)]
        now = _clock()
        ready, soonest = [], None
        self.waiting = set()
        for item in sorted(listing, key=lambda f: f.name):
            if item.name in self.gone:
                continue
            ready_at = self.seen.see(item, now)
            if ready_at <= now:
                ready.append(item)
            else:
                self.waiting.add(item.name)
                soonest = ready_at - now if soonest is None else min(soonest, ready_at - now)
        self._note_changes()
        if len(ready) > self.budget:
            ready, self.report.more = ready[:self.budget], True
        self.budget -= len(ready)
        for start in range(0, len(ready), CHUNK):
            self._keep()
            self._chunk(ready[start:start + CHUNK])
        return soonest

    def _note_changes(self) -> None:
        """One "still being written" event per file, when we first see it change."""
        changed, self.seen.changed = self.seen.changed, []
        if not changed:
            return
        record_events([EventSpec(kind="ack_waiting", connection_id=self.conn.pk, details={"file": name},
                                 message=f"{name} is still being written; read once it stops changing")
                       for name in changed])

    def _chunk(self, items: list[RemoteFile]) -> None:
        parsed, handled = [], []
        with closing(self.transport.parallel_batches(_read(self.conn.ack_path), items)) as reads:
            for result in reads:
                if result is None:
                    self._keep()
                    continue
                item, data = result
                if isinstance(data, TransportError):
                    handled.append(self._unreadable(item, data))
                    continue
                try:
                    parsed.append((item.name, parse_ack(item.name, data)))
                except MalformedAck as err:
                    handled.append(Handled(item.name, "malformed", f"{item.name}: {err.reason}"))
        handled += apply_acks(connection=self.conn, acks=parsed)
        self._file_away([h for h in handled if h.outcome != "vanished"])
        for h in handled:
            self.report.count(h.outcome)
            self.gone.add(h.name)

    def _unreadable(self, item: RemoteFile, err: TransportError) -> Handled:
        if err.code == ErrorCode.NOT_FOUND:  # gone since the listing (the ERP withdrew it, a person moved it)
            return Handled(item.name, "vanished", "")
        if err.code == ErrorCode.TOO_LARGE:
            return Handled(item.name, "malformed", f"{item.name}: over the {ACK_MAX_BYTES} byte limit")
        if err.permanent:  # a symlink, no permission: the file itself is the problem
            return Handled(item.name, "malformed", f"{item.name}: {err.message}")
        raise err  # the connection failed: the poll fails, the file stays for the next one

    def _file_away(self, handled: list[Handled]) -> None:
        """Move each file to processed/ or failed/ (after its answer committed); record what happened."""
        conn = self.conn

        def move(lane: Transport, batch: list[Handled]) -> list[str | TransportError]:
            return lane.move_many([(lane.join(conn.ack_path, h.name),
                                    conn.effective_failed_path if h.outcome in TO_FAILED
                                    else conn.effective_processed_path) for h in batch])

        events = []
        with closing(self.transport.parallel_batches(move, handled)) as moves:
            for result in moves:
                if result is None:
                    self._keep()
                    continue
                h, moved = result
                details: dict[str, Any] = {"file": h.name, "outcome": h.outcome}
                message = h.message
                kind = f"ack_{h.outcome}"
                if isinstance(moved, TransportError) and moved.code == ErrorCode.NOT_FOUND:
                    if h.recorded:
                        continue  # another poller filed it meanwhile (an overlap after a claim expired)
                    details["moved_by_another_poller"] = True
                elif isinstance(moved, TransportError):
                    kind = "ack_not_moved"
                    details["move_error"] = moved.message
                    message = (message or f"{h.name}: {h.outcome}") + (
                        f" (could not move the file: {moved.message}; the next poll files it)")
                elif h.recorded:
                    continue  # the lifecycle recorded the answer; the move went as planned
                else:
                    details["moved_to"] = moved
                events.append(EventSpec(kind=kind, message=message, export_id=h.export_id,
                                        connection_id=conn.pk, level=h.level, details=details))
        record_events(events)


def poll_connection(*, connection: ERPConnection, force: bool = False, session: Session | None = None,
                    should_stop: StopCheck = never, look_at_inbox: bool = True) -> PollReport | None:
    """One poll of one connection over one open transport (``session``'s, or its own).

    None when it is not due or someone else polls it.  ``should_stop`` cuts short its wait for new
    files to become old enough (they are read by the next poll).  ``look_at_inbox``: also list our
    export dir for files the ERP has not taken (the "stopped consuming" alert).
    """
    token = claim_connection(connection_id=connection.pk, force=force)
    if token is None:
        return None
    started = timezone.now()
    connection.refresh_from_db()
    report = PollReport(connection=str(connection))
    listing = connection.ack_listing
    lease = Lease(ERPConnection.objects.filter(pk=connection.pk, poll_claim_token=token),
                  until_field="poll_claimed_until", token=token)
    own = session is None
    session = session or Session(connection)
    try:
        transport = session.transport()
        for path in (connection.effective_processed_path, connection.effective_failed_path):
            transport.makedirs(path)
        listing = _Poll(connection, transport, report, lease, should_stop, look_at_inbox).run()
    except Exception as err:
        session.drop()
        report.error = err.message if isinstance(err, TransportError) else f"{type(err).__name__}: {err}"
        report.code = str(err.code) if isinstance(err, TransportError) else "internal"
        if not isinstance(err, TransportError):
            raise  # recorded below as a failed poll; django-q shows the traceback
    finally:
        if own:
            session.close()
        _finish(connection, token, report, listing, started)
    return report


def _finish(conn: ERPConnection, token: uuid.UUID, report: PollReport, listing: dict, started: Any) -> None:
    now = timezone.now()
    next_poll = now if report.more else started + timedelta(seconds=conn.poll_interval_seconds)
    health: dict[str, Any] = {"poll_failures": F("poll_failures") + 1 if report.error else 0,
                              "last_error_code": report.code}
    if report.inbox is not None:
        health["inbox_seen"] = report.inbox
    ERPConnection.objects.filter(pk=conn.pk, poll_claim_token=token).update(
        last_poll_at=now, last_poll_ok=not report.error, last_poll_message=str(report)[:2000], ack_listing=listing,
        next_poll_at=next_poll, poll_claim_token=None, poll_claimed_until=None, **health,
    )
    if report.error:
        record_events([EventSpec(kind="poll_failed", connection_id=conn.pk, level=ConnectorEvent.Level.ERROR,
                                 message=f"Polling {conn.ack_path} failed: {report.error}",
                                 details={"code": report.code})])
    elif report.handled:
        record_events([EventSpec(kind="poll_done", connection_id=conn.pk, message=str(report),
                                 details={"outcomes": report.outcomes})])


def poll_until_next_schedule(*, connection: ERPConnection, force: bool = False, budget: float = POLL_TASK_SECONDS,
                             should_stop: StopCheck = never) -> list[PollReport]:
    """Poll now, and again each time the connection's interval passes, while the next run fits in ``budget``.

    The schedule runs every minute (30 to 90 s apart); a connection polled
    every 10 s is polled by one task at a time, which hands over to the
    next task the schedule starts (it marks the connection as its own).
    Each poll claims the connection again, so any number of clusters stay
    safe.  With an interval of a minute or more one poll is done (more only
    while files are left).  ``should_stop`` ends it at its next pause (Ctrl-C).
    """
    ends = time.monotonic() + budget
    mine = new_token()
    ERPConnection.objects.filter(pk=connection.pk).update(poll_task=mine)
    with Session(connection) as session:  # one login for every poll of this task
        return _poll_again_and_again(connection, force, ends, session, mine, should_stop)


def _poll_again_and_again(connection: ERPConnection, force: bool, ends: float, session: Session,
                          mine: uuid.UUID, should_stop: StopCheck) -> list[PollReport]:
    reports: list[PollReport] = []
    looked_at: float | None = None  # the inbox: once a minute is plenty for an alert counted in minutes

    def done() -> bool:
        """Asked to stop (Ctrl-C), or a newer task keeps the connection now: end within a second, so two
        tasks never hold two workers (a poll waiting for new files to age would also hold its claim)."""
        return should_stop() or not ERPConnection.objects.filter(pk=connection.pk, poll_task=mine).exists()

    while True:
        # None: not due, or taken
        look = looked_at is None or time.monotonic() - looked_at >= INBOX_LOOK_SECONDS
        report = poll_connection(connection=connection, force=force, session=session, should_stop=done,
                                 look_at_inbox=look)
        if look and report is not None:
            looked_at = time.monotonic()
        force = False
        if report is not None:
            reports.append(report)
        connection.refresh_from_db(fields=["poll_interval_seconds", "next_poll_at", "is_active"])
        more = report is not None and report.more
        if report is not None and report.error:
            break  # the dropzone fails: the schedule tries again
        if connection.poll_interval_seconds >= SHORT_INTERVAL_SECONDS and not more:
            break  # one poll a run (more only while files are left)
        due = connection.next_poll_at
        wait = max((due - timezone.now()).total_seconds(), 0) if due else 0
        if report is None:
            wait = wait or 1.0  # someone else is polling it right now: look again in a moment
        if time.monotonic() + wait > ends:
            break
        if not _pause(wait, done):
            break  # asked to stop (Ctrl-C: the cluster waits for this task), or a newer task took over
    return reports


def _pause(seconds: float, should_stop: StopCheck) -> bool:
    """Sleep in steps of at most a second; False as soon as a stop is asked for."""
    while seconds > 0 and not should_stop():
        step = min(seconds, 1.0)
        _sleep(step)
        seconds -= step
    return not should_stop()
