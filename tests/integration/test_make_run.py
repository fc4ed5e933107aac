"""`make run` for real: its supervisor (``python -m orderflow.devenv serve``) on a fresh SQLite database.

Each test gets its own database file, dropzone and free port, set up the way `make run` does it
(``migrate``, ``load_demo``), and starts the supervisor in a session of its own, so every process
it leads to (runserver, qcluster, the cluster's sentinel and workers) can be found afterwards by
session id in /proc.  One test types Ctrl-C into a real terminal (a pty) running `make run`
itself: a terminal signals make and the supervisor together, and make must still exit 0.
"""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import termios
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from django.conf import settings

from connectors.simulator import erp_order_number

from . import BASE_DIR, manage, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the children by session id in /proc"),
]

STOPPED = "Stopped the web server and the task cluster."
QUIET_LINES = 3  # what may follow a Ctrl-C: the terminal's "^C" and our one line, with room for one more


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Like tests.integration.child_env, but a new SQLite file instead of this session's test database."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LOG_LEVEL", "QCLUSTER_LOG_LEVEL")}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'orderflow.sqlite3'}",
        ORDERFLOW_ENV="test",
        ORDERFLOW_ENV_FILE=str(tmp_path / ".env"),  # a developer's .env must not point the children elsewhere
        SECRET_KEY=settings.SECRET_KEY,
        FIELD_ENCRYPTION_KEYS=",".join(settings.FIELD_ENCRYPTION_KEYS),
        MEDIA_ROOT=str(tmp_path / "media"),
        LOCAL_DROPZONE_ROOT=str(tmp_path / "dropzone"),
        DJANGO_SETTINGS_MODULE="orderflow.settings",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def set_up_demo(env: dict[str, str]) -> None:
    for command in (["migrate", "--noinput"], ["load_demo"]):
        result = subprocess.run(manage(*command), cwd=BASE_DIR, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


def session(sid: int) -> list[str]:
    """The live processes (zombies aside) of session ``sid``, as "pid command line"."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            state, _ppid, _pgrp, member_of = text[text.rindex(")") + 2:].split()[:4]
            if int(member_of) == sid and state != "Z":
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{stat.parent.name} {cmdline.strip()}")
    return found


def kill_session(sid: int) -> None:
    for member in session(sid):
        with suppress(ProcessLookupError):
            os.kill(int(member.split()[0]), signal.SIGKILL)


def admin_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def lines(text: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").split("\n") if line.strip()]


@contextmanager
def supervisor(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m orderflow.devenv serve`` (what `make run` ends with), in a session of its own."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orderflow.devenv", "serve", f"127.0.0.1:{port}"],
                                cwd=BASE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: admin_answers(port) or proc.poll() is not None, what="the admin login page")
        assert proc.poll() is None, f"the supervisor exited with {proc.returncode}:\n{log.read_text()}"
        yield proc
    except BaseException:
        print(f"---- output of the supervisor ----\n{log.read_text(errors='replace')}")
        raise
    finally:
        kill_session(proc.pid)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def assert_running(sid: int) -> None:
    members = session(sid)
    for child in ("runserver", "qcluster", "simulate_erp --demo"):
        assert any(child in m for m in members), (child, members)


def assert_all_gone(sid: int) -> None:
    """Nothing of the session is left: runserver, qcluster and the cluster's sentinel, pusher, monitor, workers,
    and the demo ERP."""
    wait_until(lambda: not session(sid), what=f"the processes of session {sid} to exit", timeout=5, step=0.1)


def interrupt(proc: subprocess.Popen[bytes], log: Path) -> tuple[int, float, str]:
    """Ctrl-C as a terminal sends it (SIGINT to the foreground process group): exit status, seconds, output after.

    Also checks that every process the supervisor led to has exited (before the fixture's cleanup kills any).
    """
    assert_running(proc.pid)
    before = log.stat().st_size
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    status = proc.wait(60)
    took = time.monotonic() - started
    assert_all_gone(proc.pid)
    return status, took, log.read_bytes()[before:].decode(errors="replace")


def assert_quiet(after: str, whole: str) -> None:
    for bad in ("Traceback", "Segmentation fault", "make: ***", "KeyboardInterrupt"):
        assert bad not in whole, whole
    assert len(lines(after)) <= QUIET_LINES and STOPPED in after, after


def test_ctrl_c_stops_the_web_server_and_the_cluster_quietly(tmp_path: Path) -> None:
    env = fresh_env(tmp_path)
    set_up_demo(env)
    port = free_port()
    log = tmp_path / "serve.log"
    with supervisor(env, port, log) as proc:
        time.sleep(2)  # the cluster is up by now: this is the graceful path, not the "still starting" one
        status, took, after = interrupt(proc, log)
    assert status == 0
    assert_quiet(after, log.read_text(errors="replace"))
    assert took < 10, f"stopping took {took:.1f} s"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_ctrl_c_in_a_terminal_ends_make_run_with_exit_0(tmp_path: Path) -> None:
    """The real `make run` in a pty: ^C goes to make and the supervisor alike, as from a developer's terminal."""
    port = free_port()
    env = fresh_env(tmp_path, TERM="dumb")
    master, slave = pty.openpty()
    # make leads a new session whose controlling terminal is the pty: its group is the foreground group.
    # -o: never reinstall the venv's packages; PY: the interpreter running these tests.
    make = subprocess.Popen(
        ["make", "-o", ".venv/.run-deps", "run", f"HOST=127.0.0.1:{port}", f"PY={sys.executable}"],
        cwd=BASE_DIR, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    output = bytearray()

    def read() -> None:  # keep draining: a full pty buffer would block the children
        with suppress(OSError):
            while data := os.read(master, 65536):
                output.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: admin_answers(port) or make.poll() is not None, what="make run's admin login page",
                   timeout=120)
        assert make.poll() is None, f"make exited with {make.returncode}"
        assert (tmp_path / ".env").exists()  # ORDERFLOW_ENV_FILE: the repository's .env was left alone
        time.sleep(2)
        assert_running(make.pid)
        before = len(output)
        os.write(master, b"\x03")  # Ctrl-C typed at the terminal
        status = make.wait(60)
        assert_all_gone(make.pid)  # before the cleanup below would kill what is left
        reader.join(5)
    except BaseException:
        print(f"---- make run's terminal ----\n{output.decode(errors='replace')}")
        raise
    finally:
        kill_session(make.pid)
        with suppress(subprocess.TimeoutExpired):
            make.wait(10)
        os.close(master)
    whole = output.decode(errors="replace")
    assert status == 0, whole
    assert_quiet(output[before:].decode(errors="replace"), whole)


def draft_status(database: Path, order_number: str) -> tuple[str, str]:
    with sqlite3.connect(database, timeout=20) as conn:
        row = conn.execute("SELECT status, erp_order_id FROM orderflow_draftorder WHERE order_number = ?",
                           (order_number,)).fetchone()
    return row


def test_a_pushed_demo_draft_is_confirmed_by_the_simulated_erp(tmp_path: Path) -> None:
    """The demo's ERP is a process of its own (like a real ERP), and the engine in the cluster delivers and polls:
    no worker is spent on either, and a push is answered within one poll interval (10 s) and a few seconds."""
    env = fresh_env(tmp_path)
    set_up_demo(env)
    port = free_port()
    log = tmp_path / "serve.log"
    database = tmp_path / "orderflow.sqlite3"
    with supervisor(env, port, log) as proc:
        push = subprocess.run(manage("shell", "-c", (
            "from connectors.outbound import pushing; from orderflow.models import DraftOrder; "
            "print(pushing.push_drafts(drafts=DraftOrder.objects.filter(order_number='PO-2026-0042')))")),
            cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
        assert push.returncode == 0 and "done=1" in push.stdout, push.stdout + push.stderr
        pushed = time.monotonic()
        wait_until(lambda: draft_status(database, "PO-2026-0042")[0] == "CONFIRMED",
                   what="the demo draft to be confirmed", timeout=75, step=0.5)
        confirmed_after = time.monotonic() - pushed
        with sqlite3.connect(database, timeout=20) as conn:
            (export_id,) = conn.execute("SELECT id FROM connectors_erpexport").fetchone()
        assert draft_status(database, "PO-2026-0042")[1] == erp_order_number(str(uuid.UUID(export_id)))
        status, took, after = interrupt(proc, log)
    assert status == 0
    assert_quiet(after, log.read_text(errors="replace"))
    assert took < 10, f"stopping took {took:.1f} s"
    print(f"confirmed {confirmed_after:.1f} s after the push; Ctrl-C took {took:.1f} s")
