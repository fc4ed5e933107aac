"""Issue 17: no connection ever has two polls or two deliveries in flight, across two clusters.

A Hypothesis state machine drives two engines on one database through rounds, finished jobs, time passing
(the lease keepers renew, budgets cut), a cluster dying without a word, and connections becoming due, on a
fake clock.  The engines' real code claims the jobs (``Engine.round`` with its queue and claims); their jobs
are held in flight instead of run, so the test decides when each ends.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from connectors.models import ERPConnection, ERPExport
from connectors.work.claims import Kind, release
from connectors.work.engine import Engine
from orderflow.models import DraftOrder, Organization

LEASE = 60
BUDGET = 90  # longer than a lease: only the keeper holds the claim past 60 s
CONNECTIONS = 4


class HeldEngine(Engine):
    """An engine whose claimed jobs stay in flight until the test ends them (nothing runs for real)."""

    def __init__(self, name: str, clock: FakeClock) -> None:
        super().__init__(sessions=3, job_seconds=BUDGET, name=name)
        self.clock = clock.monotonic
        self.dead = False

    def _submit(self, due, token) -> None:  # type: ignore[no-untyped-def]
        super()._submit(due, token)
        self._todo.get_nowait()  # held: the test plays the session thread

    def end(self, key: tuple[Kind, int]) -> None:
        job = self.in_flight.pop(key)
        if job.kind == Kind.POLL:  # as a poll's end does: due again after its interval, claim released
            ERPConnection.objects.filter(pk=job.connection_id, poll_claim_token=job.token).update(
                next_poll_at=timezone.now() + timedelta(seconds=30))
        release(job.kind, job.connection_id, job.token)


class FakeClock:
    def __init__(self) -> None:
        self.start = timezone.now()
        self.elapsed = 0.0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed


class TwoClusters(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.patch = pytest.MonkeyPatch()
        self.patch.setattr(timezone, "now", self.clock.now)
        self.engines = [HeldEngine("a:1", self.clock), HeldEngine("b:2", self.clock)]

    @initialize()
    def connections(self) -> None:
        ERPExport.objects.all().delete()
        DraftOrder.objects.all().delete()
        ERPConnection.objects.all().delete()
        Organization.objects.all().delete()
        for n in range(CONNECTIONS):
            org = Organization.objects.create(slug=f"o{n}", name=f"O{n}")
            conn = ERPConnection.objects.create(organization=org, name="ERP", transport="local", is_active=True,
                                                next_poll_at=self.clock.now())
            draft = DraftOrder.objects.create(organization=org, order_number=f"PO-{n}", customer_number="C",
                                              customer_name="C", order_date=self.clock.now().date())
            ERPExport.objects.create(draft=draft, connection=conn, next_attempt_at=self.clock.now())

    def teardown(self) -> None:
        self.patch.undo()

    def live(self) -> list[HeldEngine]:
        return [e for e in self.engines if not e.dead]

    @rule(which=st.integers(0, 1))
    def a_round(self, which: int) -> None:
        if not self.engines[which].dead:
            self.engines[which].round()

    @rule(which=st.integers(0, 1), pick=st.integers(0, 10))
    def a_job_ends(self, which: int, pick: int) -> None:
        engine = self.engines[which]
        if engine.in_flight and not engine.dead:
            engine.end(sorted(engine.in_flight)[pick % len(engine.in_flight)])

    @rule(seconds=st.sampled_from([1, 5, 19, 30, 61]))
    def time_passes(self, seconds: int) -> None:
        """In steps no longer than a third of the lease, as the keepers wake: they renew, budgets cut."""
        left = seconds
        while left > 0:
            step = min(left, LEASE / 3)
            self.clock.elapsed += step
            left -= step
            for engine in self.live():
                for key, job in list(engine.in_flight.items()):
                    if job.budget.left() <= 0:  # the watchdog cut it: the job ends, its claim released
                        engine.end(key)
                engine.renew_leases()

    @rule(which=st.integers(0, 1))
    def a_cluster_dies(self, which: int) -> None:
        """kill -9: its jobs are gone with it, it renews nothing more; its claims expire on their own."""
        self.engines[which].dead = True

    @rule(conn=st.integers(0, CONNECTIONS - 1))
    def work_becomes_due(self, conn: int) -> None:
        pk = sorted(ERPConnection.objects.values_list("pk", flat=True))[conn]
        ERPConnection.objects.filter(pk=pk).update(next_poll_at=self.clock.now())
        ERPExport.objects.filter(connection_id=pk).update(next_attempt_at=self.clock.now())

    @invariant()
    def at_most_one_job_of_each_kind_per_connection(self) -> None:
        in_flight = Counter(key for engine in self.live() for key in engine.in_flight)
        assert all(n == 1 for n in in_flight.values()), in_flight


TwoClusters.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.django_db
class TestTwoClusters(TwoClusters.TestCase):
    pass
