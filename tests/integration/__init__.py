"""Integration tests that run orderflow the way production does: real processes on one database.

The helpers here start ``manage.py`` (or a small Python snippet) as separate OS
processes against the *test* database of the running pytest session, so rows
written by the test are seen by the child and the other way round.  That only
works with a committed database, hence every test using them asks for
``transactional_db``; on SQLite it also needs the file test database set in
``orderflow/settings.py`` (an in-memory one would be private to this process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from django.conf import settings
from django.db import connection

T = TypeVar("T")

BASE_DIR: Path = settings.BASE_DIR
WAIT_TIMEOUT = 60.0  # seconds; generous, because CI machines are slow and shared
WAIT_STEP = 0.5


def database_url() -> str:
    """The running test database as a ``DATABASE_URL`` for a child process."""
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        name = str(config["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise RuntimeError(f"the SQLite test database {name!r} is in memory; a child process cannot see it")
        return f"sqlite:///{Path(name).resolve()}"  # an absolute path gives sqlite:////abs/path
    if connection.vendor == "postgresql":
        auth = quote(str(config["USER"] or ""), safe="")
        if config.get("PASSWORD"):
            auth += ":" + quote(str(config["PASSWORD"]), safe="")
        host = config.get("HOST") or "127.0.0.1"
        port = config.get("PORT") or 5432
        return f"postgres://{auth}@{host}:{port}/{config['NAME']}"
    raise RuntimeError(f"no DATABASE_URL for the {connection.vendor} backend")


def child_env(media_root: Path, **extra: str) -> dict[str, str]:
    """Environment for a child: the same database and keys as this process, and nothing from ``.env``."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        ORDERFLOW_ENV="test",
        ORDERFLOW_ENV_FILE="/nonexistent",  # a developer's .env must not point the child elsewhere
        SECRET_KEY=settings.SECRET_KEY,
        FIELD_ENCRYPTION_KEYS=",".join(settings.FIELD_ENCRYPTION_KEYS),
        MEDIA_ROOT=str(media_root),  # Django storage: the test's tmp dir, never the developer's var/media
        LOCAL_DROPZONE_ROOT=str(settings.LOCAL_DROPZONE_ROOT),  # the same jail as this process
        DJANGO_SETTINGS_MODULE="orderflow.settings",
        PYTHONUNBUFFERED="1",  # so the log file is complete when a test prints it
    )
    env.update(extra)
    return env


class Child:
    """One child process whose combined output goes to a file (a pipe could fill up and block it)."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            # A session of its own: stop() can then reach the workers a qcluster forks, by this group id.
            self.proc = subprocess.Popen(list(argv), cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = WAIT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.proc.args} still running after {timeout} s:\n{self.output}") from None

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (django-q2 shuts its workers down cleanly on it), then SIGKILL the whole group."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
            return
        # Still alive, so its process group id is still ours: take the workers it forked down with it.
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@contextmanager
def running(argv: Sequence[str], *, env: dict[str, str], log: Path) -> Iterator[Child]:
    """Run a child for the duration of the block; always stop it, and show its output if the block failed."""
    child = Child(argv, env=env, log=log)
    try:
        yield child
    except BaseException:
        child.stop()
        print(f"---- output of child {child.proc.pid} ({child.log}) ----\n{child.output}")
        raise
    finally:
        child.stop()


def manage(*args: str) -> list[str]:
    return [sys.executable, str(BASE_DIR / "manage.py"), *args]


def wait_until(check: Callable[[], T], *, what: str, timeout: float = WAIT_TIMEOUT,
               alive: Child | None = None, step: float = WAIT_STEP) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` s or when ``alive`` died."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if alive is not None and not alive.running():
            raise AssertionError(f"waiting for {what}: the child exited with {alive.proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
