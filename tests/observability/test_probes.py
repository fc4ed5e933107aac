"""Issue 20: /healthz answers without the database; /readyz says 503 while the database, the broker, the
engines' heartbeat or the schedules are missing, and 200 again once they are back."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import redis
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_q.models import Schedule

from connectors.models import EngineProcess
from connectors.work.schedules import SCHEDULES, ensure_schedules

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def ready() -> tuple[int, dict]:
    response = Client().get("/readyz")
    assert response["Content-Type"] == "application/json" and response["Cache-Control"].startswith("max-age=0")
    return response.status_code, json.loads(response.content)


def heartbeat(seconds_ago: float = 0.0, *, name: str = "worker-1:42") -> None:
    seen = timezone.now() - timedelta(seconds=seconds_ago)
    EngineProcess.objects.update_or_create(name=name, defaults={
        "host": "worker-1", "pid": 42, "started_at": seen, "seen_at": seen, "sessions": 16})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nobody listens once it is closed


@contextmanager
def database_unreachable() -> Iterator[None]:
    """The database goes away under the running process: a port nobody listens on, a file that cannot be."""
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent/orderflow/db.sqlite3"
    else:
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed_port()))
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


@pytest.fixture
def ready_setup(transactional_db: None) -> None:
    ensure_schedules()
    heartbeat()


def test_healthz_asks_nothing_of_the_database(ready_setup: None) -> None:
    with database_unreachable():
        response = Client().get("/healthz")
    assert response.status_code == 200 and json.loads(response.content) == {"status": "ok"}


def test_readyz_fails_while_the_database_is_unreachable_and_recovers(ready_setup: None) -> None:
    status, body = ready()
    assert status == 200 and body["status"] == "ok", body
    assert set(body["checks"]) == {"database", "migrations", "broker", "engine", "schedules"}
    assert all(check["ok"] for check in body["checks"].values())
    with database_unreachable():
        status, body = ready()
    assert status == 503 and body["status"] == "unavailable"
    assert body["checks"]["database"] == {"ok": False, "error": "OperationalError"}  # the class, never the text
    assert body["checks"]["engine"] == {"ok": False, "reason": "the database is unreachable"}
    assert ready()[0] == 200


def test_readyz_wants_a_recent_engine_heartbeat(ready_setup: None, settings) -> None:
    EngineProcess.objects.all().delete()
    status, body = ready()
    assert status == 503 and body["checks"]["engine"]["ok"] is False and body["checks"]["engine"]["alive"] == 0
    heartbeat(seconds_ago=120)  # a qcluster that died two minutes ago
    assert ready()[0] == 503
    heartbeat()
    status, body = ready()
    assert status == 200 and body["checks"]["engine"]["alive"] == 1
    EngineProcess.objects.update(stopped_at=timezone.now())  # stopped cleanly: no engine either
    assert ready()[0] == 503
    settings.READYZ_CHECKS = ["database", "migrations", "broker", "schedules"]  # a web pod's own readiness
    status, body = ready()
    assert status == 200 and body["checks"]["engine"]["ok"] is False  # still reported


def test_readyz_wants_the_schedules(ready_setup: None) -> None:
    Schedule.objects.filter(name=next(iter(SCHEDULES))).delete()
    status, body = ready()
    assert status == 503 and body["checks"]["schedules"]["missing"] == [next(iter(SCHEDULES))]
    ensure_schedules()  # what `migrate` does
    assert ready()[0] == 200


def test_readyz_fails_while_the_broker_is_unreachable_and_recovers(ready_setup: None, settings) -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.ConnectionError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not running at {REDIS_URL} (.ci/run starts it)")
        pytest.skip(f"Redis is not running at {REDIS_URL}")
    orm = dict(settings.Q_CLUSTER)
    settings.Q_CLUSTER = {**orm, "redis": REDIS_URL}
    status, body = ready()
    assert status == 200 and body["checks"]["broker"] == {"ok": True, "kind": "redis"}
    settings.Q_CLUSTER = {**orm, "redis": f"redis://127.0.0.1:{closed_port()}/0"}
    status, body = ready()
    assert status == 503 and body["checks"]["broker"] == {"ok": False, "kind": "redis", "error": "ConnectionError"}
    settings.Q_CLUSTER = {**orm, "redis": REDIS_URL}
    assert ready()[0] == 200


def test_readyz_names_migrations_not_applied(ready_setup: None) -> None:
    from django.db.migrations.recorder import MigrationRecorder

    MigrationRecorder(connection).migration_qs.filter(app="connectors", name="0017_observability").delete()
    try:
        status, body = ready()
        assert status == 503 and body["checks"]["migrations"]["missing"] == ["connectors.0017_observability"]
    finally:
        MigrationRecorder(connection).record_applied("connectors", "0017_observability")
    assert ready()[0] == 200
