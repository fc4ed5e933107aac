"""Wall-clock deadlines for blocking network calls: one watchdog thread per process.

A socket or channel timeout restarts with every byte or packet, so a peer that
drips its answer holds a blocking call far past any timeout.  ``deadline`` runs a
block with a limit of wall-clock time; when the limit passes first, the watchdog
calls the block's ``cut`` (FTP shuts its sockets down, SFTP closes a channel),
which makes the blocked call return with an error; the block then leaves with
:class:`DeadlineExceeded`.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from .errors import TransportError


class DeadlineExceeded(TimeoutError):
    """The block's deadline passed: it was cut (whatever it did afterwards)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete answer within {seconds:g} s")
        self.seconds = seconds


class _Watchdog:
    """One daemon thread for the whole process that runs callbacks when their time comes.

    Arming is a heap push under a lock, not a thread per operation (thousands of
    operations a batch); the thread is woken only for a deadline earlier than all
    it knows.  Nothing is cancelled: a callback checks whether it is still wanted
    (see :meth:`Deadline._fire`).  Callbacks run on this thread, one after the
    other, with its lock held (re-entrant: they may arm more): they must not block.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()  # ties never compare the callbacks
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, callback: Callable[[], None]) -> None:
        when = time.monotonic() + seconds
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="transport-deadlines", daemon=True)
                self._thread.start()
            if not self._heap or when < self._heap[0][0]:
                self._cond.notify()
            heapq.heappush(self._heap, (when, next(self._order), callback))

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _when, _n, callback = heapq.heappop(self._heap)
                    with suppress(Exception):  # one failing callback must not stop every deadline
                        callback()
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


_watchdog = _Watchdog()
# A forked worker inherits the watchdog but not its thread: give the child a fresh one.
os.register_at_fork(after_in_child=lambda: globals().update(_watchdog=_Watchdog()))


def after(seconds: float, callback: Callable[[], None]) -> None:
    """Run ``callback`` on the watchdog thread in ``seconds``; it must be quick and must not block."""
    _watchdog.arm(seconds, callback)


class Deadline:
    """One armed deadline; ``expired`` tells whether its cut ran."""

    def __init__(self, seconds: float, cut: Callable[[], None]) -> None:
        self.seconds = seconds
        self.expired = False
        self._cut: Callable[[], None] | None = cut
        self._lock = threading.Lock()

    def _fire(self) -> None:
        with self._lock:  # held while cutting: once the block has ended, no cut runs or is still running
            if self._cut is None:
                return
            self.expired = True
            cut, self._cut = self._cut, None
            cut()

    def _end(self) -> None:
        with self._lock:
            self._cut = None  # also lets go of what the cut would have touched before the heap does

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Whatever breaks inside once the cut ran (EOF, a reset, a closed channel) is the timeout.

        A :class:`TransportError` passes unchanged: a verdict the block reached on its own.
        ``deadline`` guards its block; nested helpers that map errors themselves use it too.
        """
        try:
            yield
        except TransportError:
            raise
        except Exception as err:
            if self.expired:
                raise DeadlineExceeded(self.seconds) from err
            raise


@contextmanager
def deadline(seconds: float, cut: Callable[[], None]) -> Iterator[Deadline]:
    """Run the block within ``seconds`` of wall-clock time, or call ``cut`` on the watchdog thread.

    ``cut`` must make the block's blocking call return (shut a socket down, close
    a channel) without blocking itself; it runs at most once, and never after the
    block ended.  When it ran, the block leaves with :class:`DeadlineExceeded`,
    even if it then "succeeded" (a cut transfer may look complete).
    """
    limit = Deadline(seconds, cut)
    _watchdog.arm(seconds, limit._fire)
    try:
        with limit.guard():
            yield limit
    finally:
        limit._end()
    if limit.expired:
        raise DeadlineExceeded(seconds)
