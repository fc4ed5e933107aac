"""Long django-q2 tasks: a time budget inside the task timeout, and Ctrl-C ending them at their next pause.

django-q2 workers ignore SIGINT, so a Ctrl-C at a terminal (or `make run`'s supervisor, which sends
SIGINT to the cluster's process group) stops the cluster without killing a task; the cluster then
waits for the running tasks to end.  A poll task keeps polling for up to 100 s and a delivery task
drains for up to 50 s, so they listen for the same Ctrl-C while they run and end within a second,
their claims released and outcomes written.  SIGTERM is left alone: django-q2 sends it to a worker
whose task outlived the timeout, and that worker must die.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings

StopCheck = Callable[[], bool]


def never() -> bool:
    return False


def task_budget(seconds: float) -> float:
    """How long a task may keep working: its own wish, and well inside django-q2's timeout (Q_TIMEOUT)."""
    return min(seconds, settings.Q_CLUSTER["timeout"] / 2)


@contextmanager
def stop_requested() -> Iterator[StopCheck]:
    """While the block runs, SIGINT sets a flag (read with the yielded check) instead of raising."""
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
