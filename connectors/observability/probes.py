"""/healthz and /readyz: is the process up; can it and the workers do their job.

``/healthz`` touches nothing (a process that answers is alive).  ``/readyz`` runs five checks, each a query
or a ping: the database answers, it is migrated to this code's migrations, django-q2's broker answers, a
dropzone engine's heartbeat is recent (some ``qcluster`` runs), and the schedules exist.  READYZ_CHECKS names
the ones that decide 200 or 503 (all by default); every check is reported.  Bodies name checks, counts and
exception class names only: never an exception's text, a host or a secret.  A check that starts or stops
failing is logged once, with its reason, when it changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from ..work.engine import SILENT_AFTER_SECONDS, running_engines
from ..work.schedules import SCHEDULES
from . import broker

log = logging.getLogger("orderflow.readyz")
CHECKS = ("database", "migrations", "broker", "engine", "schedules")
Result = dict[str, Any]
_last: dict[str, bool] = {}  # check -> whether it passed last time (log changes only)


def _database() -> Result:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True}


@lru_cache(maxsize=1)
def _code_migrations() -> frozenset[tuple[str, str]]:
    """Every migration of this code (read from disk once per process; the check is then one query)."""
    return frozenset(MigrationLoader(None, ignore_no_migrations=True).graph.nodes)


def _migrations() -> Result:
    applied = MigrationRecorder(connection).applied_migrations()
    missing = sorted(f"{app}.{name}" for app, name in _code_migrations() - set(applied))
    return {"ok": not missing, **({"missing": missing} if missing else {})}


def _broker() -> Result:
    seen = broker.look(counts=False)
    return {"ok": seen.up, "kind": seen.kind, **({"error": seen.error} if seen.error else {})}


def _engine() -> Result:
    engines = running_engines()
    if not engines:
        return {"ok": False, "alive": 0, "reason": f"no engine heartbeat in the last {SILENT_AFTER_SECONDS} s"}
    newest = max(e.seen_at for e in engines)
    return {"ok": True, "alive": len(engines),
            "heartbeat_age_seconds": round(max((timezone.now() - newest).total_seconds(), 0.0), 1)}


def _schedules() -> Result:
    from django_q.models import Schedule

    present = set(Schedule.objects.filter(name__in=list(SCHEDULES)).values_list("name", flat=True))
    missing = sorted(set(SCHEDULES) - present)
    return {"ok": not missing, **({"missing": missing, "fix": "python manage.py migrate"} if missing else {})}


RUNNERS: dict[str, Callable[[], Result]] = {"database": _database, "migrations": _migrations, "broker": _broker,
                                            "engine": _engine, "schedules": _schedules}


def readiness() -> tuple[bool, dict[str, Result]]:
    """(ready, each check's result).  With the database down the checks that read it are not tried."""
    results: dict[str, Result] = {}
    for name, run in RUNNERS.items():
        if name != "database" and name != "broker" and not results["database"]["ok"]:
            results[name] = {"ok": False, "reason": "the database is unreachable"}
            continue
        try:
            results[name] = run()
        except (DatabaseError, OSError) as err:  # OSError: a broker socket; neither's text goes in the body
            results[name] = {"ok": False, "error": type(err).__name__}
            _log_change(name, False, f"{type(err).__name__}: {str(err)[:300]}")
            continue
        _log_change(name, results[name]["ok"], results[name].get("reason") or results[name].get("error", ""))
    required = [name for name in settings.READYZ_CHECKS if name in results]
    return all(results[name]["ok"] for name in required), results


def _log_change(name: str, ok: bool, why: object) -> None:
    if _last.get(name, True) != ok:
        if ok:
            log.info("readyz: %s is ok again", name)
        else:
            log.warning("readyz: %s failed: %s", name, why or "see /readyz")
    _last[name] = ok
