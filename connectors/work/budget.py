"""The wall-clock budget of one job, and the cut when it runs out.

A socket timeout restarts with every byte, so a partner that drips its replies holds each operation up to its
own timeout, and a job of many operations far longer.  A budget bounds the whole job: the job stops starting
new chunks once its *slice* has passed (the rest waits for its next turn, behind other organizations), and
when the budget itself runs out the watchdog *cuts* the partner's connection (``Transport.abort``), which ends
whatever operation is blocked on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..transports.deadline import after
from ..transports.errors import ErrorCode, TransportError

#: Share of the budget after which a job starts no new chunk (it is then continued by its next job).
SLICE_SHARE = 0.5
StopCheck = Callable[[], bool]  # asked between chunks: True ends the job there (the rest waits for the next)


def never() -> bool:
    return False


class Budget:
    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self.started = clock()
        self.deadline = self.started + seconds
        self.cut_off = threading.Event()  # set by the watchdog when the budget ran out
        self.stopped = False  # the engine shut down and cut the job (not the partner's fault)
        self._abort: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return self._clock() - self.started

    def left(self) -> float:
        return self.deadline - self._clock()

    def slice_over(self) -> bool:
        """Time to leave the rest for the next job: half the budget is spent, or it was cut off."""
        return self.cut_off.is_set() or self.elapsed() >= self.seconds * SLICE_SHARE

    @contextmanager
    def cutting(self, abort: Callable[[], None]) -> Iterator[Budget]:
        """While the block runs, ``abort()`` is called (on the watchdog thread) if the budget runs out first,
        or at once by ``stop()``.  ``abort`` must not block.  Nothing is called once the block has ended.
        """
        with self._lock:
            self._abort = abort
        after(max(self.left(), 0.0), self._fire)
        try:
            yield self
        finally:
            with self._lock:
                self._abort = None

    def stop(self) -> None:
        """Cut the job now (the process is stopping); its fault says so instead of blaming the partner."""
        self.stopped = True
        self._fire()

    def _fire(self) -> None:
        with self._lock:
            if self._abort is not None:
                self.cut_off.set()
                self._abort()
                self._abort = None


def cut_off_error(budget: Budget, what: str, err: TransportError) -> TransportError:
    """What a fault is when the budget cut it: the partner was too slow, whatever the socket then said."""
    if budget.stopped:
        return TransportError(f"interrupted: orderflow's worker stopped during the {what}; it is taken up again "
                              "by the next one", code=ErrorCode.NETWORK)
    return TransportError(f"cut off: the server did not finish within the {what}'s budget of {budget.seconds:g} s "
                          f"({err.message})", code=ErrorCode.OVER_BUDGET)
