"""The observability settings: safe defaults (production refuses unauthenticated scrapes), clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.test_settings import DEV_KEYS, ROOT, clean_env

OURS = ("LOG_FORMAT", "METRICS_TOKEN", "METRICS_PUBLIC", "METRICS_LABEL_LIMIT", "METRICS_CACHE_SECONDS",
        "READYZ_CHECKS", "PROBE_TIMEOUT_SECONDS")


def run(**env: str) -> subprocess.CompletedProcess[str]:
    code = ("import json, django; django.setup(); from django.conf import settings as s; "
            f"print(json.dumps({{n: getattr(s, n) for n in {list(OURS)!r}}} | "
            "{'formatter': s.LOGGING['handlers']['console']['formatter']}))")
    environment = {k: v for k, v in clean_env(**DEV_KEYS).items() if k not in OURS}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**environment, **env}, capture_output=True,
                          text=True, timeout=60)


def values(**env: str) -> dict:
    result = run(**env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_defaults() -> None:
    production = values(ORDERFLOW_ENV="production")
    assert production == {"LOG_FORMAT": "plain", "METRICS_TOKEN": "", "METRICS_PUBLIC": False,
                          "METRICS_LABEL_LIMIT": 100, "METRICS_CACHE_SECONDS": 15.0,
                          "READYZ_CHECKS": ["database", "migrations", "broker", "engine", "schedules"],
                          "PROBE_TIMEOUT_SECONDS": 2.0, "formatter": "plain"}
    assert values(ORDERFLOW_ENV="dev")["METRICS_PUBLIC"] is True


def test_variables_override_them() -> None:
    got = values(ORDERFLOW_ENV="production", LOG_FORMAT="JSON", METRICS_TOKEN="t0k", METRICS_LABEL_LIMIT="5",
                 READYZ_CHECKS="database, broker", PROBE_TIMEOUT_SECONDS="0")
    assert (got["LOG_FORMAT"], got["formatter"], got["METRICS_TOKEN"]) == ("json", "json", "t0k")
    assert got["METRICS_LABEL_LIMIT"] == 5 and got["READYZ_CHECKS"] == ["database", "broker"]
    assert got["PROBE_TIMEOUT_SECONDS"] == 0.1  # bounded: a zero timeout would fail every probe


def test_mistakes_are_clear_errors() -> None:
    result = run(ORDERFLOW_ENV="dev", LOG_FORMAT="xml")
    assert result.returncode != 0 and "LOG_FORMAT must be 'plain' or 'json'" in result.stderr
    result = run(ORDERFLOW_ENV="dev", READYZ_CHECKS="database,cache")
    assert result.returncode != 0 and "READYZ_CHECKS names a check that does not exist" in result.stderr
