"""Settings come from the environment: each case is a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOW = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], 'name': str(s.DATABASES['default']['NAME']),"
    " 'host': s.DATABASES['default'].get('HOST', ''), 'q': s.Q_CLUSTER, 'debug': s.DEBUG}))"
)


def run_settings(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DEBUG",
                          "ORDERFLOW_ENV"}}
    clean.update({"DJANGO_SETTINGS_MODULE": "orderflow.settings", "ORDERFLOW_ENV_FILE": "/nonexistent/.env"})
    clean.update(env)
    return subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=60)


def shown(**env: str) -> dict:
    result = run_settings(**env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_defaults_need_no_services() -> None:
    s = shown(ORDERFLOW_ENV="dev")
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["name"].endswith("var/orderflow.sqlite3")
    assert s["q"]["orm"] == "default" and "redis" not in s["q"]
    assert s["q"]["timeout"] < s["q"]["retry"]
    assert s["q"]["max_attempts"] >= 1 and s["q"]["catch_up"] is False
    assert s["debug"] is False


def test_database_url_switches_to_postgresql() -> None:
    s = shown(ORDERFLOW_ENV="dev", DATABASE_URL="postgres://orderflow@127.0.0.1:5432/orders")
    assert s["engine"] == "django.db.backends.postgresql"
    assert (s["name"], s["host"]) == ("orders", "127.0.0.1")


def test_redis_url_switches_the_task_broker() -> None:
    s = shown(ORDERFLOW_ENV="dev", REDIS_URL="redis://127.0.0.1:6379/3")
    assert s["q"]["redis"] == "redis://127.0.0.1:6379/3"
    assert "orm" not in s["q"]


def test_production_without_secret_key_is_a_clear_error() -> None:
    result = run_settings(ORDERFLOW_ENV="production")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_without_encryption_keys_is_a_clear_error() -> None:
    result = run_settings(ORDERFLOW_ENV="production", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS is not set" in result.stderr


def test_timeout_not_below_retry_is_refused() -> None:
    result = run_settings(ORDERFLOW_ENV="dev", Q_TIMEOUT="400", Q_RETRY="300")
    assert result.returncode != 0
    assert "Q_TIMEOUT must be smaller than Q_RETRY" in result.stderr
