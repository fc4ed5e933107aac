"""Log lines for log shippers: ``LOG_FORMAT=json`` writes one JSON object per line (web and workers alike).

Each object has ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``process``, ``thread`` and
the ids known where the line was written: ``organization_id``, ``connection_id``, ``export_id``,
``task_id`` and ``task`` (a django-q2 task), ``job`` (poll or delivery), ``event`` (a timeline event's
kind).  Ids come from the log call's ``extra`` or from the context the code running the work sets with
:func:`log_context`: the engine around each job, django-q2's ``pre_execute`` signal around each task.

The message is the text the plain format shows, which never carries a secret (tests/security/test_leaks.py
reads both formats); nothing else of a record (its args, other extras) is written.  The standard library
does this in a few lines, so no structlog: its processors would still have to be taught the same ids.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

IDS = ("organization_id", "connection_id", "export_id", "task_id", "task", "job", "event")
_context: ContextVar[dict[str, Any] | None] = ContextVar("orderflow_log_context", default=None)
_task_tokens: dict[str, Token] = {}  # a django-q2 task's context, reset when it ends


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Every line logged in the block (in this thread or task) carries these ids; None values are left out."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_ids() -> dict[str, Any]:
    return {k: v for k, v in (_context.get() or {}).items() if v is not None}


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or a traceback are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "process": record.process, "thread": record.threadName,
        }
        entry.update(current_ids())
        for key in IDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ASCII only: a lone surrogate from a hostile file name is escaped instead of breaking the stream.
        return json.dumps(entry, ensure_ascii=True, default=str)


def connect_task_context() -> None:
    """Give the lines a django-q2 task logs its task's id (called once the apps are ready)."""
    from django_q.signals import post_execute_in_worker, pre_execute

    pre_execute.connect(_task_started, dispatch_uid="orderflow-log-task-started")
    post_execute_in_worker.connect(_task_ended, dispatch_uid="orderflow-log-task-ended")


def _task_started(sender: object, func: object = None, task: dict | None = None, **kwargs: Any) -> None:
    task = task or {}
    name = task.get("func") if isinstance(task.get("func"), str) else getattr(func, "__qualname__", None)
    task_id = str(task.get("id") or "")
    _task_tokens[task_id] = _context.set({**(_context.get() or {}), "task_id": task_id or None, "task": name})


def _task_ended(sender: object, task: dict | None = None, **kwargs: Any) -> None:
    token = _task_tokens.pop(str((task or {}).get("id") or ""), None)
    if token is not None:
        try:
            _context.reset(token)
        except ValueError:  # set in another context (cannot happen in a worker; be safe in sync mode)
            _context.set(None)
