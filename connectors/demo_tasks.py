"""The demo's django-q2 entry point: the simulated ERP of the demo connection (scheduled by `load_demo` only).

Thin: it takes the connection id, checks the row is still the demo's own local dropzone (else it
removes its schedule and stops), and runs :func:`connectors.demo.run_demo_erp` for most of the
minute until the schedule fires again, so an export file is answered a couple of seconds after it
appears instead of up to a minute later.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings

from . import demo, schedules
from .models import ERPConnection

RUN_SECONDS = 45.0  # the schedule fires every 60 s: runs never overlap, and a worker is free 1/4 of the time
PASS_INTERVAL = 2.0  # seconds between simulator passes


def answer_demo_exports(connection_id: int, seconds: float = RUN_SECONDS, interval: float = PASS_INTERVAL) -> str:
    """The demo schedule's task: answer the demo's export files for up to ``seconds``; a one-line summary."""
    conn = ERPConnection.objects.select_related("organization").filter(pk=connection_id).first()
    problem = demo.not_the_demo(conn)
    if problem:
        removed = schedules.remove_demo_schedule()
        return f"{problem}; nothing answered" + ("; demo schedule removed" if removed else "")
    # Well inside the task timeout (Q_TIMEOUT), whatever it is set to.
    seconds = min(seconds, float(settings.Q_CLUSTER.get("timeout") or RUN_SECONDS) / 2)
    with _interrupt_flag() as stopping:
        return str(demo.run_demo_erp(connection=conn, seconds=seconds, interval=interval, should_stop=stopping))


@contextmanager
def _interrupt_flag() -> Iterator[Callable[[], bool]]:
    """While the run lasts, a SIGINT ends it after the current pass instead of being ignored.

    django-q2 workers ignore SIGINT, so a Ctrl-C at a terminal (or `make run`'s supervisor, which
    sends SIGINT to the cluster's process group) stops the cluster without killing a task; the
    cluster then waits for running tasks to end.  This task would hold that up for most of a
    minute, so it listens for the same Ctrl-C and returns within a fraction of a second.
    """
    flag = threading.Event()
    # Handlers live in the main thread; and one set outside Python (None) could not be put back.
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield flag.is_set
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield flag.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
