"""Settings come from the environment: each case is a fresh interpreter."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from orderflow.devenv import TEST_FIELD_ENCRYPTION_KEY, TEST_SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent
SHOW = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], 'name': str(s.DATABASES['default']['NAME']),"
    " 'host': s.DATABASES['default'].get('HOST', ''), 'q': s.Q_CLUSTER, 'debug': s.DEBUG}))"
)


# Everything settings read that a developer's or CI's shell might carry.
SETTINGS_VARS = {
    "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DEBUG", "ORDERFLOW_ENV", "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER",
    "ALLOWED_TRANSPORTS", "LOCAL_DROPZONE_ROOT", "DROPZONE_DEMO_ROOT", "Q_TIMEOUT", "Q_RETRY", "SECRET_KEY_FALLBACKS",
}
# Keys of the kind `make run` writes into .env.
DEV_KEYS = {"SECRET_KEY": secrets.token_urlsafe(50), "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode()}


def clean_env(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    clean.update({"DJANGO_SETTINGS_MODULE": "orderflow.settings", "ORDERFLOW_ENV_FILE": "/nonexistent/.env"})
    clean.update(env)
    return clean


def run_settings(code: str = SHOW, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(**env), capture_output=True,
                          text=True, timeout=60)


def shown(**env: str) -> dict:
    result = run_settings(**env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def settings_of(*names: str, **env: str) -> dict:
    code = ("import json, django; django.setup(); from django.conf import settings as s; "
            f"print(json.dumps({{n: getattr(s, n) for n in {list(names)!r}}}, default=str))")
    result = run_settings(code, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_defaults_need_no_services() -> None:
    s = shown(ORDERFLOW_ENV="dev", **DEV_KEYS)
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["name"].endswith("var/orderflow.sqlite3")
    assert s["q"]["orm"] == "default" and "redis" not in s["q"]
    assert s["q"]["timeout"] < s["q"]["retry"]
    assert s["q"]["max_attempts"] >= 1 and s["q"]["catch_up"] is False
    assert s["debug"] is False


def test_database_url_switches_to_postgresql() -> None:
    s = shown(ORDERFLOW_ENV="dev", DATABASE_URL="postgres://orderflow@127.0.0.1:5432/orders", **DEV_KEYS)
    assert s["engine"] == "django.db.backends.postgresql"
    assert (s["name"], s["host"]) == ("orders", "127.0.0.1")


def test_redis_url_switches_the_task_broker() -> None:
    s = shown(ORDERFLOW_ENV="dev", REDIS_URL="redis://127.0.0.1:6379/3", **DEV_KEYS)
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
    result = run_settings(ORDERFLOW_ENV="test", Q_TIMEOUT="400", Q_RETRY="300")
    assert result.returncode != 0
    assert "Q_TIMEOUT must be smaller than Q_RETRY" in result.stderr


# --- keys: only ORDERFLOW_ENV=test may fall back to the repository's built-in ones ---

def test_test_uses_the_builtin_keys() -> None:
    s = settings_of("SECRET_KEY", "FIELD_ENCRYPTION_KEYS", ORDERFLOW_ENV="test")
    assert s == {"SECRET_KEY": TEST_SECRET_KEY, "FIELD_ENCRYPTION_KEYS": [TEST_FIELD_ENCRYPTION_KEY]}


@pytest.mark.parametrize("missing", ["SECRET_KEY", "FIELD_ENCRYPTION_KEYS"])
def test_dev_without_keys_says_to_run_make_run(missing: str) -> None:
    keys = {k: v for k, v in DEV_KEYS.items() if k != missing}
    result = run_settings(ORDERFLOW_ENV="dev", **keys)
    assert result.returncode != 0
    assert f"{missing} is not set (ORDERFLOW_ENV='dev')" in result.stderr and "make run" in result.stderr


def test_dev_with_keys_from_env_runs_on_them() -> None:
    s = settings_of("SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DEBUG", ORDERFLOW_ENV="dev", **DEV_KEYS)
    assert s["SECRET_KEY"] == DEV_KEYS["SECRET_KEY"]
    assert s["FIELD_ENCRYPTION_KEYS"] == [DEV_KEYS["FIELD_ENCRYPTION_KEYS"]]


def test_dev_reads_its_keys_from_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ORDERFLOW_ENV=dev\n" + "".join(f"{k}={v}\n" for k, v in DEV_KEYS.items()))
    s = settings_of("ORDERFLOW_ENV", "SECRET_KEY", ORDERFLOW_ENV_FILE=str(env_file))
    assert s == {"ORDERFLOW_ENV": "dev", "SECRET_KEY": DEV_KEYS["SECRET_KEY"]}


@pytest.mark.parametrize("env_name", ["production", "staging", "dev"])
@pytest.mark.parametrize("builtin", ["SECRET_KEY", "SECRET_KEY_FALLBACKS", "FIELD_ENCRYPTION_KEYS"])
def test_builtin_keys_are_refused_outside_test(env_name: str, builtin: str) -> None:
    keys = dict(DEV_KEYS)
    if builtin.startswith("SECRET_KEY"):
        keys[builtin] = TEST_SECRET_KEY
    else:  # even as a second, decrypt-only key
        keys["FIELD_ENCRYPTION_KEYS"] = f"{DEV_KEYS['FIELD_ENCRYPTION_KEYS']},{TEST_FIELD_ENCRYPTION_KEY}"
    result = run_settings(ORDERFLOW_ENV=env_name, **keys)
    assert result.returncode != 0
    assert "is the repository's built-in test key, which is public" in result.stderr
    assert TEST_FIELD_ENCRYPTION_KEY not in result.stderr and TEST_SECRET_KEY not in result.stderr


# --- ALLOWED_TRANSPORTS ---

def test_allowed_transports_default_to_all_known() -> None:
    from connectors.transports import TRANSPORTS

    assert settings_of("ALLOWED_TRANSPORTS", ORDERFLOW_ENV="test")["ALLOWED_TRANSPORTS"] == list(TRANSPORTS)


def test_allowed_transports_are_normalised() -> None:
    s = settings_of("ALLOWED_TRANSPORTS", ORDERFLOW_ENV="test", ALLOWED_TRANSPORTS=" FTPS, sftp,sftp ,")
    assert s["ALLOWED_TRANSPORTS"] == ["sftp", "ftps"]


@pytest.mark.parametrize("value, expected", [
    ("sftp,ftpes", "names unknown transport(s) ftpes"),
    ("", "names no transport"),
    (" , ", "names no transport"),
])
def test_allowed_transports_refuse_unknown_or_no_kinds(value: str, expected: str) -> None:
    result = run_settings(ORDERFLOW_ENV="test", ALLOWED_TRANSPORTS=value)
    assert result.returncode != 0
    assert f"ALLOWED_TRANSPORTS {expected}" in result.stderr and "sftp, ftps, ftp, local" in result.stderr


# --- LOCAL_DROPZONE_ROOT ---

def test_local_dropzone_root_defaults_to_var_dropzone() -> None:
    s = settings_of("LOCAL_DROPZONE_ROOT", ORDERFLOW_ENV="test")
    assert s["LOCAL_DROPZONE_ROOT"] == str((ROOT / "var" / "dropzone").resolve())


def test_local_dropzone_root_from_env_old_name_as_fallback(tmp_path: Path) -> None:
    new, old = tmp_path / "new", tmp_path / "old"
    assert settings_of("LOCAL_DROPZONE_ROOT", ORDERFLOW_ENV="test", DROPZONE_DEMO_ROOT=str(old)) == {
        "LOCAL_DROPZONE_ROOT": str(old.resolve())}
    assert settings_of("LOCAL_DROPZONE_ROOT", ORDERFLOW_ENV="test", DROPZONE_DEMO_ROOT=str(old),
                       LOCAL_DROPZONE_ROOT=str(new)) == {"LOCAL_DROPZONE_ROOT": str(new.resolve())}
    # A relative path is taken from the project directory, wherever the worker was started.
    assert settings_of("LOCAL_DROPZONE_ROOT", ORDERFLOW_ENV="test", LOCAL_DROPZONE_ROOT="drops") == {
        "LOCAL_DROPZONE_ROOT": str((ROOT / "drops").resolve())}


# --- HTTPS ---

HTTPS = ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS",
         "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER", "ALLOWED_HOSTS",
         "CSRF_TRUSTED_ORIGINS")


def test_production_defaults_are_https_only_and_serve_no_host() -> None:
    s = settings_of(*HTTPS, ORDERFLOW_ENV="production", **DEV_KEYS)
    assert s["SECURE_SSL_REDIRECT"] and s["SESSION_COOKIE_SECURE"] and s["CSRF_COOKIE_SECURE"]
    assert s["SECURE_HSTS_SECONDS"] >= 31_536_000
    assert not s["SECURE_HSTS_INCLUDE_SUBDOMAINS"] and not s["SECURE_HSTS_PRELOAD"]  # opt-in
    assert s["SECURE_PROXY_SSL_HEADER"] is None  # opt-in: trusting a header is only safe behind a proxy
    assert s["ALLOWED_HOSTS"] == [] and s["CSRF_TRUSTED_ORIGINS"] == []


@pytest.mark.parametrize("env_name", ["dev", "test"])
def test_dev_and_test_serve_plain_http_on_loopback(env_name: str) -> None:
    s = settings_of(*HTTPS, ORDERFLOW_ENV=env_name, **DEV_KEYS)
    assert not s["SECURE_SSL_REDIRECT"] and not s["SESSION_COOKIE_SECURE"] and not s["CSRF_COOKIE_SECURE"]
    assert s["SECURE_HSTS_SECONDS"] == 0
    assert s["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost"]


@pytest.mark.parametrize("value, expected", [
    ("X-Forwarded-Proto", ["HTTP_X_FORWARDED_PROTO", "https"]),
    ("HTTP_X_FORWARDED_PROTO", ["HTTP_X_FORWARDED_PROTO", "https"]),
    ("X-Forwarded-Ssl,on", ["HTTP_X_FORWARDED_SSL", "on"]),
])
def test_proxy_ssl_header_is_opt_in_and_parsed(value: str, expected: list[str]) -> None:
    s = settings_of("SECURE_PROXY_SSL_HEADER", ORDERFLOW_ENV="production", SECURE_PROXY_SSL_HEADER=value,
                    **DEV_KEYS)
    assert s["SECURE_PROXY_SSL_HEADER"] == expected


def test_production_variables_override_the_defaults() -> None:
    s = settings_of(*HTTPS, ORDERFLOW_ENV="production", ALLOWED_HOSTS="orders.example.com,.example.org",
                    CSRF_TRUSTED_ORIGINS="https://orders.example.com", SECURE_HSTS_SECONDS="600",
                    SECURE_HSTS_INCLUDE_SUBDOMAINS="true", SECURE_HSTS_PRELOAD="true", SECURE_SSL_REDIRECT="false",
                    **DEV_KEYS)
    assert s["ALLOWED_HOSTS"] == ["orders.example.com", ".example.org"]
    assert s["CSRF_TRUSTED_ORIGINS"] == ["https://orders.example.com"]
    hsts = (s["SECURE_HSTS_SECONDS"], s["SECURE_HSTS_INCLUDE_SUBDOMAINS"], s["SECURE_HSTS_PRELOAD"])
    assert hsts == (600, True, True)
    assert s["SECURE_SSL_REDIRECT"] is False
