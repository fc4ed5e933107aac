"""The demo for `make run`: a local connection for organization `demo`, inside LOCAL_DROPZONE_ROOT, and its ERP.

The ERP is :class:`connectors.simulator.ERPSimulator` run by a demo-only django-q2 schedule
(connectors.demo_tasks), so a pushed demo draft is answered and confirmed without anyone writing
an ack file.  Only `load_demo` creates that schedule; it never answers anything but the demo's
own local dropzone.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction

from orderflow.demo import load_demo_orders
from orderflow.models import Organization

from .inbound import polling
from .models import ERPConnection
from .simulator import ACCEPTED, INVALID, REJECTED, ERPSimulator, SimulatorSettings
from .transports import TransportError, get_transport
from .work import schedules

DEMO_ORGANIZATION = "demo"
DEMO_CONNECTION = "Demo dropzone (local)"
DEMO_HOST = "demo"  # the connection's sub-directory of LOCAL_DROPZONE_ROOT


@transaction.atomic
def load_demo() -> list[str]:
    """The demo organization and drafts, its active local connection and its ERP's schedule; safe to rerun."""
    created = load_demo_orders()
    org = Organization.objects.get(slug=DEMO_ORGANIZATION)
    root = Path(settings.LOCAL_DROPZONE_ROOT) / DEMO_HOST
    for sub in ("inbound", "outbound", "outbound/processed", "outbound/failed"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conn, made = ERPConnection.objects.get_or_create(
        organization=org, name=DEMO_CONNECTION,
        defaults={"transport": "local", "host": DEMO_HOST, "export_path": "/inbound", "ack_path": "/outbound",
                  "min_ack_age_seconds": 2, "poll_interval_seconds": 10, "is_active": True},
    )
    if made:
        created.append(f"local connection on {root}")
    problem = not_the_demo(conn)
    if problem:  # someone repointed the demo connection: its files are no longer the simulator's to answer
        schedules.remove_demo_schedule()
    elif schedules.ensure_demo_schedule(connection_id=conn.pk):
        created.append(f"schedule '{schedules.DEMO_SCHEDULE}'")
    return created


def not_the_demo(conn: ERPConnection | None) -> str:
    """Why the simulated ERP must not answer this connection's files ("" when it may)."""
    if conn is None:
        return "the demo connection no longer exists"
    if conn.organization.slug != DEMO_ORGANIZATION or conn.name != DEMO_CONNECTION:
        return f"connection {conn.pk} is no longer the demo's ({DEMO_ORGANIZATION} / {DEMO_CONNECTION})"
    if conn.transport != "local" or conn.host != DEMO_HOST:
        # A real ERP's dropzone: answering (and removing) its files would take orders away from that ERP.
        return f"connection {conn.pk} no longer points at the demo's local dropzone"
    return ""


@dataclass
class DemoERPReport:
    passes: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    polls: int = 0
    error: str = ""
    stopped: bool = False  # asked to stop before its time was up (the cluster is shutting down)

    def __str__(self) -> str:
        text = (f"demo ERP: {self.passes} pass(es), {self.outcomes[ACCEPTED]} accepted, "
                f"{self.outcomes[REJECTED]} rejected, {self.outcomes[INVALID]} invalid, {self.polls} poll(s)")
        answers = (ACCEPTED, REJECTED, INVALID)
        others = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()) if k not in answers)
        text += f" ({others})" if others else ""
        text += "; stopped early" if self.stopped else ""
        return text + (f"; {self.error}" if self.error else "")


def run_demo_erp(*, connection: ERPConnection, seconds: float, interval: float,
                 should_stop: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> DemoERPReport:
    """Answer the demo connection's export files for ``seconds``: a simulator pass every ``interval`` s.

    After a pass that answered something, the demo connection is polled as soon as its poll
    interval allows (the claim only succeeds when it is due), instead of waiting up to a minute
    for the every-minute poll schedule: a pushed draft is confirmed within seconds.  A transport
    fault that can heal ends the pass, not the run; one that cannot heal ends the run.
    """
    report = DemoERPReport()
    deadline = clock() + seconds
    # Taken once: an admin repointing the connection meanwhile cannot send this run elsewhere (the next one stops).
    simulator = ERPSimulator(SimulatorSettings(export_dir=connection.export_path, ack_dir=connection.ack_path,
                                               temp_suffix=connection.temp_suffix, mapping=connection.mapping or None))
    try:
        where = connection.transport_settings()
    except TransportError as err:  # e.g. ALLOWED_TRANSPORTS forbids local directories here
        report.error = err.message
        return report
    to_poll = False
    while True:
        report.passes += 1
        try:
            with get_transport(where) as transport:
                answered = simulator.run_pass(transport)
        except TransportError as err:
            report.error = f"pass {report.passes}: {err.message}"
            if err.permanent:
                return report
        else:
            report.outcomes.update(answered.counts)
            to_poll = to_poll or any(r.outcome in (ACCEPTED, REJECTED, INVALID) for r in answered.results)
        if to_poll and polling.poll_connection(connection=connection) is not None:
            report.polls += 1
            to_poll = False
        next_pass = clock() + interval
        while (now := clock()) < min(next_pass, deadline) and not should_stop():
            sleep(min(0.25, next_pass - now))
        if should_stop():
            report.stopped = True
            return report
        if clock() >= deadline:
            return report
