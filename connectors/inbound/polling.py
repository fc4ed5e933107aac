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
A poll never waits for a file to age: it sets the connection's next poll to
the moment the file will be old enough (docs/work-model.md), and the engine
polls it again then.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from ..contract.acks import ACK_MAX_BYTES, MalformedAck, classify_name, parse_ack, shown_name, unusable_answer_name
from ..models import ConnectorEvent, ERPConnection, ERPExport
from ..services.events import EventSpec, record_events
from ..services.lifecycle import AWAITING_ANSWER
from ..transports import LISTING_LIMIT, ErrorCode, RemoteFile, Transport, TransportError
from ..work.budget import Budget, StopCheck, cut_off_error, never
from ..work.claims import Kind, claim, unclaimed
from ..work.leases import Lease
from ..work.sessions import Session
from .answers import TO_FAILED, Handled, apply_acks

MAX_ACKS_PER_POLL = 2000  # one run ends well inside its budget; the rest is due again at once
CHUNK = 100  # acks read, applied (one transaction) and moved together ...
CHUNK_BYTES = 8 * 1024 * 1024  # ... or fewer, so that a chunk's files hold at most this much (plus one file)
RECHECK_MIN_SECONDS = 1.0  # a file that will be old enough sooner is looked at again after this long
INBOX_LOOK_SECONDS = 60  # a connection's inbox (our export dir) is listed at most this often
BACKOFF_MAX_SECONDS = 900  # failed polls back off (interval x 2^n) up to this, or the interval if longer
# Our clock for readiness (a seam for tests: waiting a minimum age for real would make them slow).
_clock: Callable[[], float] = time.time


@dataclass
class PollReport:
    connection: str
    outcomes: dict[str, int] = field(default_factory=dict)
    error: str = ""
    code: str = ""  # the fault's ErrorCode when the poll failed
    more: bool = False  # files were left for the next run (MAX_ACKS_PER_POLL, or the job's slice ran out)
    crowded: bool = False  # the ack dir holds more than LISTING_LIMIT entries: only the first are read
    ready_in: float | None = None  # a file seen waiting will be old enough in this many seconds
    inbox: dict[str, float] | None = None  # our files still in the ERP's inbox -> first seen (our clock)
    bytes_read: int = 0  # of the ack files read (/metrics)

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n

    @property
    def handled(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k != "waiting")

    def __str__(self) -> str:
        if self.error:
            return f"{self.connection}: poll failed: {self.error}"
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items())) or "no ack files"
        crowded = (f"; the ack dir holds more than {LISTING_LIMIT} entries: each poll reads the first "
                   f"{LISTING_LIMIT} (move other files out of it)") if self.crowded else ""
        return f"{self.connection}: {counts}{crowded}"


def awaiting_answers() -> Exists:
    return Exists(ERPExport.objects.filter(connection=OuterRef("pk"), status__in=AWAITING_ANSWER))


def pollable() -> QuerySet[ERPConnection]:
    """Active connections, and inactive ones still draining: exports sent through them await an answer."""
    return ERPConnection.objects.filter(Q(is_active=True) | awaiting_answers())


def due_connections(now: datetime | None = None) -> QuerySet[ERPConnection]:
    """Pollable connections whose next poll has come (measured from their own last poll) and nobody polls."""
    now = now or timezone.now()
    return pollable().filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now)).filter(
        unclaimed(Kind.POLL, now))


def claim_connection(*, connection_id: int, force: bool = False) -> uuid.UUID | None:
    """Claim a connection whose poll is due (``force``: any connection, due or not); None if someone has it."""
    now = timezone.now()
    if force:
        ids = [connection_id]
    else:
        ids = list(due_connections(now).filter(pk=connection_id).values_list("pk", flat=True))
    token, won = claim(Kind.POLL, ids, now=now)
    return token if won else None


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


def _chunks(ready: list[RemoteFile]) -> Iterator[list[RemoteFile]]:
    """Up to CHUNK files, and no more than CHUNK_BYTES of them (by their listed size) unless a file alone is."""
    chunk: list[RemoteFile] = []
    size = 0
    for item in ready:
        if chunk and (len(chunk) == CHUNK or size + item.size > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item.size
    if chunk:
        yield chunk


def _read(directory: str) -> Callable[[Transport, list[RemoteFile]], list[bytes | TransportError]]:
    def read(lane: Transport, items: list[RemoteFile]) -> list[bytes | TransportError]:
        return lane.read_many(directory, items, max_bytes=ACK_MAX_BYTES)

    return read


class _Poll:
    """One poll run of one connection over one open session."""

    def __init__(self, conn: ERPConnection, session: Session, report: PollReport, lease: Lease,
                 should_stop: StopCheck = never, look_at_inbox: bool = True) -> None:
        self.conn, self.session, self.report, self.lease = conn, session, report, lease
        self.transport = session.transport()
        self.should_stop, self.look_at_inbox = should_stop, look_at_inbox
        self.seen = _Observations(conn.ack_listing, conn.min_ack_age_seconds)
        self.gone: set[str] = set()  # handled (moved) this run
        self.waiting: set[str] = set()  # seen, not ready yet

    def run(self) -> dict[str, list]:
        if self.look_at_inbox:
            self._look_at_inbox()
        self.report.ready_in = self._pass()
        if self.waiting:
            self.report.count("waiting", len(self.waiting))  # not yet unchanged long enough by our clock
        return {n: v for n, v in self.seen.current.items() if n not in self.gone}

    def _look_at_inbox(self) -> None:
        """Which of our files the ERP has not taken yet (one listing): for "the ERP stopped consuming" alerts."""
        suffix, seen, now = self.transport.settings.temp_suffix, self.conn.inbox_seen or {}, _clock()
        listing = self.transport.list_dir(self.conn.export_path, limit=LISTING_LIMIT)
        names = [f.name for f in listing
                 if f.name.endswith(".json") and not f.name.startswith(".") and not f.name.endswith(suffix)]
        self.report.inbox = {name: seen.get(name, now) for name in names}
        if listing.truncated:  # the files not listed this time are not gone: keep when they were first seen
            self.report.inbox = {**seen, **self.report.inbox}

    def _keep(self) -> None:
        if not self.lease.keep():
            raise TransportError("the poll outlived its claim and another poller took over; stopped",
                                 code="claim_lost")

    def _pass(self) -> float | None:
        """List, handle what is ready; seconds until the next waiting file is ready (None: none waits)."""
        listed = self.transport.list_dir(self.conn.ack_path, limit=LISTING_LIMIT)
        self.report.crowded = listed.truncated
        listing = [f for f in listed if classify_name(f.name)]
        self._file_unusable([f.name for f in listed if f.name not in self.gone and unusable_answer_name(f.name)])
        now = _clock()
        ready, soonest = [], None
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
        if len(ready) > MAX_ACKS_PER_POLL:
            ready, self.report.more = ready[:MAX_ACKS_PER_POLL], True
        if ready:
            self.session.ensure_dirs(self.conn.effective_processed_path, self.conn.effective_failed_path)
        for number, chunk in enumerate(_chunks(ready)):
            if number and self.should_stop():  # the job's slice is spent: the rest in its next turn
                self.report.more = True
                break
            self._keep()
            self._chunk(chunk)
        # Entries beyond the listing's limit: read again at once while this run filed some (the listing then
        # reaches further); a directory crowded with other files is read at the usual interval.
        self.report.more = self.report.more or (listed.truncated and bool(self.gone))
        return soonest

    def _file_unusable(self, names: list[str]) -> None:
        """Files named like answers that can never be one (a control character in the name): to the failed dir
        with the reason, not left in the ack dir for every poll to pass over."""
        if not names:
            return
        self.session.ensure_dirs(self.conn.effective_processed_path, self.conn.effective_failed_path)
        handled = [Handled(name, "malformed", f"{shown_name(name)}: {unusable_answer_name(name)}") for name in names]
        self._file_away(handled)
        for h in handled:
            self.report.count(h.outcome)
            self.gone.add(h.name)

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
                self.report.bytes_read += len(data)
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


def poll_connection(*, connection: ERPConnection, force: bool = False, token: uuid.UUID | None = None,
                    session: Session | None = None, budget: Budget | None = None,
                    should_stop: StopCheck = never) -> PollReport | None:
    """One poll of one connection over one open transport (``session``'s, or its own).

    ``token``: the engine claimed the connection already (else this claims it, and returns None when it is not
    due, or ``force`` is off and someone else polls it).  ``budget``: its wall-clock budget; past it the
    connection is cut and the poll recorded as cut off.  The poll starts no new chunk of files once
    ``should_stop()`` or the budget's slice says so (the rest is due again at once).  The inbox (our export
    dir, for the "stopped consuming" alert) is listed at most once a minute.
    """
    token = token or claim_connection(connection_id=connection.pk, force=force)
    if token is None:
        return None
    started = timezone.now()
    connection.refresh_from_db()
    report = PollReport(connection=str(connection))
    listing = connection.ack_listing
    look = connection.inbox_checked_at is None or (started - connection.inbox_checked_at).total_seconds() >= \
        INBOX_LOOK_SECONDS
    lease = Lease(ERPConnection.objects.filter(pk=connection.pk, poll_claim_token=token),
                  until_field="poll_claimed_until", token=token)
    own = session is None
    session = session or Session(connection)
    stop = should_stop if budget is None else (lambda: should_stop() or budget.slice_over())
    try:
        with budget.cutting(session.abort) if budget else nullcontext():
            listing = _Poll(connection, session, report, lease, stop, look).run()
    except Exception as err:
        session.drop()
        report.error = err.message if isinstance(err, TransportError) else f"{type(err).__name__}: {err}"
        report.code = str(err.code) if isinstance(err, TransportError) else "internal"
        if budget is not None and budget.cut_off.is_set():
            cut = cut_off_error(budget, "poll", TransportError(report.error))
            report.error, report.code = cut.message, cut.code
        elif not isinstance(err, TransportError):
            raise  # recorded below as a failed poll; the engine logs the traceback
    finally:
        if own:
            session.close()
        _finish(connection, token, report, listing, started, looked=look)
    return report


def next_poll_at(conn: ERPConnection, report: PollReport, *, started: datetime, now: datetime) -> datetime:
    """When the connection is due again: its interval after this poll started, measured from its own poll and
    never aligned to anything else; sooner when a file will be ready sooner or files were left; later (backing
    off) while polls fail."""
    interval = conn.poll_interval_seconds
    if report.error:
        failures = conn.poll_failures + 1
        wait = min(interval * 2 ** (failures - 1), max(interval, BACKOFF_MAX_SECONDS))
        return now + timedelta(seconds=wait)
    if report.more:
        return now
    due = started + timedelta(seconds=interval)
    if report.ready_in is not None:
        due = min(due, now + timedelta(seconds=max(report.ready_in, RECHECK_MIN_SECONDS)))
    return due


def _finish(conn: ERPConnection, token: uuid.UUID, report: PollReport, listing: dict, started: datetime, *,
            looked: bool) -> None:
    now = timezone.now()
    health: dict[str, Any] = {"poll_failures": F("poll_failures") + 1 if report.error else 0,
                              "last_error_code": report.code}
    if report.inbox is not None:
        health["inbox_seen"] = report.inbox
    if looked and not report.error:
        health["inbox_checked_at"] = now
    if not report.error:
        health["last_poll_ok_at"] = now
    ERPConnection.objects.filter(pk=conn.pk, poll_claim_token=token).update(
        last_poll_at=now, last_poll_ok=not report.error, last_poll_message=str(report)[:2000], ack_listing=listing,
        next_poll_at=next_poll_at(conn, report, started=started, now=now), poll_claim_token=None,
        poll_claimed_until=None, **health,
    )
    if report.error:
        record_events([EventSpec(kind="poll_failed", connection_id=conn.pk, level=ConnectorEvent.Level.ERROR,
                                 message=f"Polling {conn.ack_path} failed: {report.error}",
                                 details={"code": report.code})])
    elif report.handled:
        record_events([EventSpec(kind="poll_done", connection_id=conn.pk, message=str(report),
                                 details={"outcomes": report.outcomes})])
