"""orderflow settings: everything comes from the environment (or `.env`).

Safe defaults let a fresh checkout run with no services: SQLite under `var/`,
django-q2's ORM broker, a local-directory dropzone.  `DATABASE_URL` switches to
PostgreSQL (psycopg 3), `REDIS_URL` switches the task broker to Redis.

Outside development and tests a missing `SECRET_KEY` or
`FIELD_ENCRYPTION_KEYS` stops the start-up with a clear message instead of
falling back to a key everyone knows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# Real environment variables win over the file.
ENV_FILE = Path(env.str("ORDERFLOW_ENV_FILE", default=str(BASE_DIR / ".env")))
if ENV_FILE.is_file():
    environ.Env.read_env(ENV_FILE, overwrite=False)

# "dev" and "test" may use the built-in insecure keys; anything else must set them.
ORDERFLOW_ENV: str = env("ORDERFLOW_ENV", default="test" if "pytest" in sys.modules else "production")
_INSECURE_OK = ORDERFLOW_ENV in {"dev", "test"}

DEBUG: bool = env.bool("DEBUG", default=False)


def _required(name: str, dev_default: str) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if _INSECURE_OK:
        return dev_default
    raise ImproperlyConfigured(
        f"{name} is not set. Set it in the environment or in .env "
        f"(ORDERFLOW_ENV={ORDERFLOW_ENV!r}; only 'dev' and 'test' have built-in defaults)."
    )


SECRET_KEY: str = _required("SECRET_KEY", "insecure-dev-key-do-not-use-in-production")
# Comma-separated Fernet keys: the first encrypts, all decrypt (rotation).
# The dev/test default is a fixed, public key: fine for demo data only.
FIELD_ENCRYPTION_KEYS: list[str] = [
    k.strip()
    for k in _required("FIELD_ENCRYPTION_KEYS", "ZGV2LW9ubHkta2V5LWZvci1vcmRlcmZsb3ctdGVzdHM=").split(",")
    if k.strip()
]

ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "orderflow.apps.OrderflowConfig",
    "connectors.apps.ConnectorsConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "orderflow.urls"
WSGI_APPLICATION = "orderflow.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'orderflow.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Several django-q2 workers write to one SQLite file: wait for the lock
    # instead of failing at once with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
    # A file (not :memory:) test database, so a real qcluster process in the tests sees the same rows.
    # Per process, so two test runs in one checkout never replace each other's database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-orderflow-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=VAR_DIR / "static")
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")
MEDIA_URL = "media/"
# Archived export payloads go to the default storage; any STORAGES backend works.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Where the demo's local dropzone lives (make run).
DROPZONE_DEMO_ROOT = env.path("DROPZONE_DEMO_ROOT", default=VAR_DIR / "dropzone")

# django-q2.  timeout < retry, or the ORM broker hands a still running task to
# a second worker; catch_up False so a stopped cluster does not replay every
# missed minute of the schedules at start.
REDIS_URL: str = env.str("REDIS_URL", default="")
Q_CLUSTER: dict = {
    "name": "orderflow.apps.OrderflowConfig",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": env.int("Q_TIMEOUT", default=300),
    "retry": env.int("Q_RETRY", default=360),
    "max_attempts": env.int("Q_MAX_ATTEMPTS", default=3),
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "poll": 1,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
if Q_CLUSTER["timeout"] >= Q_CLUSTER["retry"]:
    raise ImproperlyConfigured("Q_TIMEOUT must be smaller than Q_RETRY, or running tasks get delivered twice.")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # paramiko logs every channel at INFO; keep its warnings only.
    "loggers": {"paramiko": {"level": "WARNING"}},
}

# Exports SENT longer than this without an ack are flagged overdue in the admin.
ACK_OVERDUE_AFTER_MINUTES: int = env.int("ACK_OVERDUE_AFTER_MINUTES", default=60)
# Connector events older than this are deleted by a daily schedule.
EVENT_RETENTION_DAYS: int = env.int("EVENT_RETENTION_DAYS", default=90)
