"""Several operations in flight over one open transport: one worker thread per lane.

A *lane* is a handle that one thread may use on its own: the transport itself,
or (SFTP) another channel on the same SSH connection.  The caller's thread
only produces items and consumes results, so its database work (rendering,
recording outcomes, renewing a lease) overlaps the transfers, and it never
waits longer than ``tick`` seconds without control coming back to it.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, Protocol, TypeVar

from .errors import TransportError

T = TypeVar("T")
R = TypeVar("R")
_STOP = object()


class Lanes(Protocol):
    """What ``run_parallel`` needs of a transport: handles for threads, and their release."""

    def open_lanes(self, count: int) -> list: ...

    def close_lanes(self, lanes: list) -> None: ...


class _Died:
    """A lane was stopped by something that is not an error (KeyboardInterrupt, SystemExit): re-raised."""

    def __init__(self, err: BaseException) -> None:
        self.err = err


def run_parallel(
    transport: Lanes,
    op: Callable[[Any, T], R],
    items: Iterable[T],
    *,
    lanes: int,
    tick: float = 1.0,
) -> Iterator[tuple[T, R | TransportError] | None]:
    """Yield ``(item, op(lane, item) or its TransportError)`` as each finishes, ``None`` every idle ``tick``.

    ``items`` is read in the caller's thread, at most two per lane ahead of
    the lanes.  Closing the generator early stops the lanes after their
    current item; items not yet started are dropped (the caller knows which
    results it got).
    """
    source = iter(items)
    ahead: deque[T] = deque(islice(source, lanes))
    if not ahead:
        return
    handles = transport.open_lanes(min(lanes, len(ahead)))
    todo: queue.Queue = queue.Queue(maxsize=2 * len(handles))
    done: queue.Queue = queue.Queue()

    def work(lane: Any) -> None:
        while (item := todo.get()) is not _STOP:
            try:
                result: R | TransportError = op(lane, item)
            except TransportError as err:
                result = err
            except Exception as err:  # noqa: BLE001 - a stray error must not lose the item's result
                result = TransportError(f"{type(err).__name__}: {err}")
            except BaseException as err:  # the caller's thread re-raises it, so nothing waits forever
                done.put((item, _Died(err)))
                return
            done.put((item, result))

    threads = [threading.Thread(target=work, args=(h,), name="transport-lane", daemon=True) for h in handles]
    for thread in threads:
        thread.start()
    in_flight, exhausted = 0, False
    try:
        while True:
            while not todo.full():
                if not ahead and not exhausted:
                    nxt = next(source, _STOP)
                    exhausted = nxt is _STOP
                    if not exhausted:
                        ahead.append(nxt)  # type: ignore[arg-type]
                if not ahead:
                    break
                todo.put_nowait(ahead.popleft())
                in_flight += 1
            if not in_flight:
                return
            try:
                finished = done.get(timeout=tick)
            except queue.Empty:
                yield None
                continue
            in_flight -= 1
            if isinstance(finished[1], _Died):
                raise finished[1].err
            yield finished
    finally:
        while True:  # drop what was not started, then stop every lane
            try:
                todo.get_nowait()
            except queue.Empty:
                break
        for _ in threads:
            todo.put(_STOP)
        for thread in threads:
            thread.join()  # each operation is bounded by the transport's own deadlines
        transport.close_lanes(handles)
