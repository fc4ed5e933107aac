"""The demo's django-q2 entry point: the simulated ERP of the demo connection (scheduled by `load_demo` only).

Thin: it takes the connection id, checks the row is still the demo's own local dropzone (else it
removes its schedule and stops), and runs :func:`connectors.demo.run_demo_erp` for most of the
minute until the schedule fires again, so an export file is answered a couple of seconds after it
appears instead of up to a minute later.
"""

from __future__ import annotations

from . import demo
from .models import ERPConnection
from .work import schedules
from .work.stop import stop_requested, task_budget

RUN_SECONDS = 45.0  # the schedule fires every 60 s: runs never overlap, and a worker is free 1/4 of the time
PASS_INTERVAL = 2.0  # seconds between simulator passes


def answer_demo_exports(connection_id: int, seconds: float = RUN_SECONDS, interval: float = PASS_INTERVAL) -> str:
    """The demo schedule's task: answer the demo's export files for up to ``seconds``; a one-line summary."""
    conn = ERPConnection.objects.select_related("organization").filter(pk=connection_id).first()
    problem = demo.not_the_demo(conn)
    if problem:
        removed = schedules.remove_demo_schedule()
        return f"{problem}; nothing answered" + ("; demo schedule removed" if removed else "")
    with stop_requested() as stopping:  # Ctrl-C ends the run after the current pass
        return str(demo.run_demo_erp(connection=conn, seconds=task_budget(seconds), interval=interval,
                                     should_stop=stopping))

