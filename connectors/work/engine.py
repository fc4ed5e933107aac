"""The dropzone engine: every partner's network I/O, many partners at once, in one process (docs/work-model.md).

``Engine.run()`` is the scheduler loop (the ``qcluster`` command runs it in the cluster's main process).  Each
round it claims due jobs up to its free session threads (``queue.pick``: round robin by organization) and
hands them to the threads; a job runs ``jobs.poll`` or ``jobs.deliver`` within its budget.  A keeper thread
writes the engine's heartbeat, renews the leases of the jobs in flight (never of one past its budget), and
closes sessions kept idle too long.
"""

from __future__ import annotations

import logging
import os
import queue as queues
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone

from ..models import EngineProcess, ERPConnection
from ..observability.logs import log_context
from ..observability.tallies import WorkTally
from . import jobs
from .budget import Budget
from .claims import Kind, claim, release, renew
from .queue import Due, due_deliveries, due_polls, pick
from .sessions import Session, SessionCache

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
#: An engine not heard from for this long is taken for dead (its claims expire on their own).
SILENT_AFTER_SECONDS = 30
STOP_GRACE_SECONDS = 1.5  # on stop, jobs in flight get this long to finish before they are cut
STOP_WAIT_SECONDS = 2.0  # then the threads this long to end, and the last heartbeat this long to be written
_STOP = object()


@dataclass
class Job:
    kind: Kind
    connection_id: int
    token: Any
    suspect: bool
    budget: Budget
    session: Session | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class Tally:
    polls: int = 0
    deliveries: int = 0
    cut_off: int = 0


class Engine:
    def __init__(self, *, sessions: int | None = None, job_seconds: float | None = None, tick: float | None = None,
                 name: str | None = None, inline: bool = False) -> None:
        """``inline``: no threads; ``round()`` runs the jobs it claims one after the other in the caller's
        thread (django-q2's sync mode and the tests, where everything happens in one transaction)."""
        self.inline = inline
        self.clock = time.monotonic  # the jobs' budgets' clock (a seam for the property tests)
        self.slots = settings.CONNECTOR_SESSIONS if sessions is None else sessions
        self.job_seconds = job_seconds or settings.CONNECTOR_JOB_SECONDS
        self.tick = tick or settings.CONNECTOR_TICK_SECONDS
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.cache = SessionCache(size=settings.CONNECTOR_IDLE_SESSIONS,
                                  keep_seconds=settings.CONNECTOR_KEEP_SESSION_SECONDS)
        self.tally = Tally()
        self.metrics = WorkTally()  # counters and durations for /metrics, written with the heartbeat
        self.in_flight: dict[tuple[Kind, int], Job] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._todo: queues.Queue = queues.Queue()
        self._threads: list[threading.Thread] = []
        self._keeper: threading.Thread | None = None

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> None:
        """Schedule until ``stop()``; then stop within a few seconds, claims released."""
        self.start()
        try:
            while not self._stopping.is_set():
                try:
                    self.round()
                except Exception:  # a database hiccup must not end the engine: look again next tick
                    log.exception("dropzone engine: scheduling round failed")
                    connections.close_all()
                self._wake.wait(self.tick)
                self._wake.clear()
        finally:
            self.shutdown()
            connections.close_all()  # the scheduler's own database connection

    def start(self) -> None:
        for n in range(self.slots):
            thread = threading.Thread(target=self._work, name=f"partner-session-{n + 1}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._keeper = threading.Thread(target=self._keep, name="engine-keeper", daemon=True)
        self._keeper.start()

    def stop(self) -> None:
        """Ask the loop to end (from a signal handler or another thread); never blocks."""
        self._stopping.set()
        self._wake.set()

    def round(self) -> int:
        """Claim due jobs for the free session threads and start them; how many started."""
        with self._lock:
            free = self.slots - len(self.in_flight)
            suspects = sum(1 for job in self.in_flight.values() if job.suspect)
        if free <= 0 or self._stopping.is_set():
            return 0
        now = timezone.now()
        limit = max(2 * free, 32)
        due = [d for d in due_polls(now, limit=limit) + due_deliveries(now, limit=limit)
               if (d.kind, d.connection_id) not in self.in_flight]
        chosen = pick(due, free=free, suspects_free=max(1, self.slots // 4) - suspects)
        started = 0
        for kind in Kind:
            wanted = {d.connection_id: d for d in chosen if d.kind == kind}
            if not wanted:
                continue
            token, won = claim(kind, wanted, now=now)
            for connection_id in won:
                self._submit(wanted[connection_id], token)
                started += 1
        return started

    def _submit(self, due: Due, token: Any) -> None:
        job = Job(due.kind, due.connection_id, token, due.suspect, Budget(self.job_seconds, clock=self.clock))
        if self.inline:
            self._run(job)
            return
        with self._lock:
            self.in_flight[(job.kind, job.connection_id)] = job
        self._todo.put(job)

    # -- the session threads --------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while (job := self._todo.get()) is not _STOP:
                try:
                    self._run(job)
                except Exception:
                    log.exception("dropzone engine: %s of connection %s failed", job.kind, job.connection_id)
                finally:
                    _tidy_database()
                    with self._lock:
                        self.in_flight.pop((job.kind, job.connection_id), None)
                    job.done.set()
                    self._wake.set()  # a thread is free: look for work now, not at the next tick
        finally:
            connections.close_all()  # this thread's own database connection

    def _run(self, job: Job) -> None:
        connection = ERPConnection.objects.filter(pk=job.connection_id).first()
        if connection is None or self._stopping.is_set():
            release(job.kind, job.connection_id, job.token)
            return
        job.session = self.cache.take(connection, now=time.monotonic())
        report: object = None
        try:
            with log_context(organization_id=connection.organization_id, connection_id=job.connection_id,
                             job=str(job.kind)):
                if job.kind == Kind.POLL:
                    report = jobs.poll(job.connection_id, token=job.token, session=job.session, budget=job.budget)
                else:
                    report = jobs.deliver(job.connection_id, token=job.token, session=job.session,
                                          budget=job.budget)
        except Exception:
            self.metrics.job_done(str(job.kind), None, job.budget, raised=True)
            raise
        else:
            self.metrics.job_done(str(job.kind), report, job.budget)
        finally:
            if self._stopping.is_set() or self.inline:
                job.session.close()
            else:
                self.cache.give_back(job.session, now=time.monotonic())
        cut_off = job.budget.cut_off.is_set() and not job.budget.stopped
        with self._lock:
            self.tally.polls += job.kind == Kind.POLL
            self.tally.deliveries += job.kind == Kind.DELIVERY
            self.tally.cut_off += cut_off
        if cut_off:
            log.warning("dropzone engine: %s of connection %s cut off after %.0f s: %s", job.kind,
                        job.connection_id, job.budget.seconds, report)

    # -- the keeper ------------------------------------------------------------------------------------------
    def _keep(self) -> None:
        lease_third = settings.CLAIM_LEASE_SECONDS / 3
        renewed = time.monotonic()
        try:
            self._heartbeat(started=True)
            while not self._stopping.wait(min(HEARTBEAT_SECONDS, lease_third)):
                try:
                    if time.monotonic() - renewed >= lease_third:
                        self.renew_leases()
                        renewed = time.monotonic()
                    self._heartbeat()
                    self.cache.close_idle(now=time.monotonic())
                except Exception:
                    log.exception("dropzone engine: keeper round failed")
                    connections.close_all()
        finally:
            connections.close_all()

    def renew_leases(self) -> None:
        """Extend the claims of the jobs in flight, except those past their budget (the cut did not end them:
        a stuck job then loses its claim like a dead process)."""
        with self._lock:
            live = [job for job in self.in_flight.values() if job.budget.left() > 0]
        for kind in Kind:
            renew(kind, [(job.connection_id, job.token) for job in live if job.kind == kind])

    def _heartbeat(self, *, started: bool = False) -> None:
        now = timezone.now()
        values = {"seen_at": now, "busy": len(self.in_flight), "sessions": self.slots, "stopped_at": None,
                  "polls": self.tally.polls, "deliveries": self.tally.deliveries, "cut_off": self.tally.cut_off,
                  "metrics": self.metrics.snapshot()}
        if started:
            host, _, pid = self.name.rpartition(":")
            EngineProcess.objects.update_or_create(
                name=self.name, defaults={**values, "host": host, "pid": int(pid) if pid.isdigit() else 0,
                                          "started_at": now})
        else:
            EngineProcess.objects.filter(name=self.name).update(**values)

    # -- stopping ---------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Jobs in flight get a moment to finish, then they are cut; threads end; the heartbeat says stopped.

        Bounded whatever happens (a thread stuck in a database lock, a partner that ignores the cut): the
        threads are daemons, and what they held is taken over once its lease expires.
        """
        self.stop()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for job in list(self.in_flight.values()):
            job.done.wait(max(deadline - time.monotonic(), 0))
        for job in list(self.in_flight.values()):
            job.budget.stop()
        for _ in self._threads:
            self._todo.put(_STOP)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for thread in [*self._threads, *([self._keeper] if self._keeper else [])]:
            thread.join(max(deadline - time.monotonic(), 0))
        self.cache.close_all()
        goodbye = threading.Thread(target=self._goodbye, name="engine-goodbye", daemon=True)
        goodbye.start()
        goodbye.join(STOP_WAIT_SECONDS)

    def _goodbye(self) -> None:
        try:
            self._heartbeat()
            EngineProcess.objects.filter(name=self.name).update(stopped_at=timezone.now())
        finally:
            connections.close_all()


def running_engines() -> list[EngineProcess]:
    """The engines that gave a sign of life lately (one per qcluster process, on any machine)."""
    recent = timezone.now() - timedelta(seconds=SILENT_AFTER_SECONDS)
    return list(EngineProcess.objects.filter(stopped_at=None, seen_at__gte=recent).order_by("name"))


def _tidy_database() -> None:
    """After a job: a connection that broke (the database restarted) is closed, so the next job reconnects."""
    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred and not conn.is_usable():
            conn.close()
