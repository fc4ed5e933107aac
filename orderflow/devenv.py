"""`make run`'s helpers: development keys in `.env`, and the process that runs the web server and the task cluster.

``python -m orderflow.devenv`` writes ``.env`` with freshly generated keys, once.  It runs before
Django is configured (settings read `.env`), so it imports no Django settings.  An existing `.env`
is kept; only a development one (``ORDERFLOW_ENV=dev``) that lacks a key gets a generated one
appended.  ``ORDERFLOW_ENV_FILE`` names another file, as it does for the settings.

``python -m orderflow.devenv serve 127.0.0.1:8000`` is `make run`'s foreground process (:func:`serve`):
``runserver``, ``qcluster`` and the demo's simulated ERP (``simulate_erp --demo``) as its children, and one
Ctrl-C stops them all, quietly, within a few seconds, with exit status 0.

This module also names the repository's public keys: the fallbacks that only
``ORDERFLOW_ENV=test`` may use.  Settings refuse them everywhere else.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parent.parent
# The file the settings read (ORDERFLOW_ENV_FILE, relative to the working directory like there).
ENV_FILE = Path(os.environ.get("ORDERFLOW_ENV_FILE") or BASE_DIR / ".env")

#: Built-in keys for ORDERFLOW_ENV=test only. They are in a public repository, so they protect nothing.
TEST_SECRET_KEY = "insecure-dev-key-do-not-use-in-production"
TEST_FIELD_ENCRYPTION_KEY = "ZGV2LW9ubHkta2V5LWZvci1vcmRlcmZsb3ctdGVzdHM="


def generated_keys() -> dict[str, str]:
    return {"SECRET_KEY": secrets.token_urlsafe(50), "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode()}


def _assigned(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip().strip("'\"")
    return values


def main() -> None:
    keys = generated_keys()
    if not ENV_FILE.exists():
        ENV_FILE.write_text(
            "# Written by `make run` for local development. Do not use these keys in production.\n"
            "ORDERFLOW_ENV=dev\n"
            "DEBUG=true\n" + "".join(f"{name}={value}\n" for name, value in keys.items()),
            encoding="utf-8",
        )
        ENV_FILE.chmod(0o600)
        print(f"Wrote {ENV_FILE.name} with generated development keys.")
        return
    text = ENV_FILE.read_text(encoding="utf-8")
    assigned = _assigned(text)
    missing = [name for name in keys if not assigned.get(name)]
    if not missing or assigned.get("ORDERFLOW_ENV") != "dev":
        print(f"{ENV_FILE.name} exists; keeping it.")
        return
    # A FIELD_ENCRYPTION_KEYS added here cannot read secrets stored with another key: enter those again.
    addition = "".join(f"{name}={keys[name]}\n" for name in missing)
    ENV_FILE.write_text(text + ("" if text.endswith("\n") or not text else "\n") + addition, encoding="utf-8")
    print(f"{ENV_FILE.name} exists; added generated development {', '.join(missing)}.")


# --- `make run`'s supervisor ---------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
NUDGE_AFTER = 1.5  # s: a cluster still starting ignores the Ctrl-C; SIGTERM ends it then
GRACE = 15.0  # s: then whatever is left is killed
QCLUSTER_LOG_LEVEL = "WARNING"  # the cluster's INFO lines (each task, each worker start and stop) drown the demo


class _Stop:
    """Counts stop requests (Ctrl-C, SIGTERM, a closed terminal): the first stops, a second kills."""

    requests = 0

    @classmethod
    def request(cls, signum: int, frame: object) -> None:
        cls.requests += 1


def _terminal() -> int | None:
    """Our controlling terminal, open, when our process group is its foreground group (an interactive `make run`)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:  # no controlling terminal (CI, a test, a service manager)
        return None
    try:
        if os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _set_foreground(fd: int, pgrp: int) -> None:
    # A background group may not take the terminal without SIGTTOU (which would stop it): ignore that meanwhile.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgrp)
    finally:
        signal.signal(signal.SIGTTOU, previous)


def _take_terminal() -> Callable[[], None]:
    """Make a process group of our own the terminal's foreground group; returns how to give it back.

    A terminal sends Ctrl-C to its whole foreground group, and GNU make, in it with us, dies of
    the SIGINT after its recipe ends (exit status 130) whatever the recipe returns.  With a group
    of our own in the foreground, only this process hears Ctrl-C, stops the children and exits 0,
    and make exits 0 after it.  Without a terminal nothing changes.
    """
    fd = _terminal()
    if fd is None:
        return lambda: None
    make_group = os.getpgrp()
    try:
        os.setpgid(0, 0)
    except OSError:  # a session leader
        os.close(fd)
        return lambda: None
    try:
        _set_foreground(fd, os.getpgrp())
    except OSError:  # the terminal went away: back into make's group, or no Ctrl-C would reach us
        os.setpgid(0, make_group)
        os.close(fd)
        return lambda: None

    def give_back() -> None:
        try:
            _set_foreground(fd, make_group)
        except OSError:  # make is gone already: its shell takes the terminal back itself
            pass
        os.close(fd)
    return give_back


def _child_setup(*, ignore_sigint: bool) -> Callable[[], None]:
    """Runs in each child before exec: gone with us if we die, and (the cluster) deaf to SIGINT while it starts."""
    prctl = None
    if sys.platform.startswith("linux"):
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)  # we ignore it; an ignored signal stays ignored across exec
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the supervisor dies, even by SIGKILL
        if ignore_sigint:
            # Python then installs no KeyboardInterrupt handler (no traceback from a half-started Django);
            # django-q2 installs its own stop handler once the cluster exists.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return setup


def _start(argv: list[str], env: dict[str, str], *, ignore_sigint: bool = False,
           quiet: bool = False) -> subprocess.Popen[bytes]:
    # A process group each: a terminal's Ctrl-C never reaches them directly; we decide how each one stops.
    # quiet: the demo ERP prints a line per pass; its answers show in the admin instead.
    return subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdin=subprocess.DEVNULL, process_group=0,
                            stdout=subprocess.DEVNULL if quiet else None,
                            preexec_fn=_child_setup(ignore_sigint=ignore_sigint))


def _say(text: str) -> None:
    try:
        print(text, flush=True)
    except OSError:  # the terminal is gone (SIGHUP): nobody to tell
        pass


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_all(procs: list[subprocess.Popen[bytes]], deadline: float, *, requests: int) -> bool:
    """Wait until every process has exited (True), the deadline passed, or another stop request came."""
    while any(p.poll() is None for p in procs):
        if time.monotonic() > deadline or _Stop.requests > requests:
            return False
        time.sleep(0.1)
    return True


def _stop(web: subprocess.Popen[bytes], cluster: subprocess.Popen[bytes], erp: subprocess.Popen[bytes]) -> str:
    """Stop every child: "" if they stopped by themselves, else why the rest was killed."""
    requests = _Stop.requests
    for proc in (web, erp):
        _signal_group(proc, signal.SIGTERM)  # neither holds anything that needs a graceful stop
    _signal_group(cluster, signal.SIGINT)  # what a terminal's Ctrl-C would send: the engine and tasks end
    started = time.monotonic()
    if not _wait_all([cluster], started + NUDGE_AFTER, requests=requests) and cluster.poll() is None:
        cluster.send_signal(signal.SIGTERM)  # the cluster's main process only; it ignored SIGINT while starting
    procs = [web, cluster, erp]
    clean = _wait_all(procs, started + GRACE, requests=requests)  # a second Ctrl-C: kill at once
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)  # whatever is left in their groups (nothing, after a clean stop)
        proc.wait()
    if clean:
        return ""
    return "asked twice" if _Stop.requests > requests else f"still running after {GRACE:g} s"


def serve(address: str) -> int:
    """Run ``runserver ADDRESS``, ``qcluster`` and the demo ERP until Ctrl-C (exit status 0) or until the web
    server or the cluster exits."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _Stop.request)
    signal.signal(signal.SIGTSTP, signal.SIG_IGN)  # stopped, we could not hand the terminal back to the shell
    give_back = _take_terminal()
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    cluster_env = {**os.environ, "LOG_LEVEL": os.environ.get("QCLUSTER_LOG_LEVEL") or QCLUSTER_LOG_LEVEL}
    try:
        web = _start([*manage, "runserver", address, "--noreload"], dict(os.environ))
        cluster = _start([*manage, "qcluster"], cluster_env, ignore_sigint=True)
        # The demo's ERP answers its dropzone every 2 s, as a process of its own like a real ERP.
        erp = _start([*manage, "simulate_erp", "--demo", "--interval", "2"],
                     {**cluster_env, "PYTHONUNBUFFERED": "1"}, quiet=True)
        names = {web.pid: "The web server", cluster.pid: "The task cluster", erp.pid: "The demo ERP"}
        status = 0
        while not _Stop.requests:
            exited = next((p for p in (web, cluster) if p.poll() is not None), None)
            if exited is not None:
                code = exited.returncode
                status = 128 - code if code < 0 else code or 1
                _say(f"{names[exited.pid]} exited with status {code}; stopping the others.")
                break
            time.sleep(0.2)
        why = _stop(web, cluster, erp)
        if not why:
            _say("Stopped the web server and the task cluster." if not status else "Stopped.")
        else:
            killed = " and ".join(names[p.pid].lower() for p in (web, cluster, erp)
                                  if p.returncode == -signal.SIGKILL)
            _say(f"Killed {killed or 'what was left of them'} ({why}).")
        return status
    finally:
        give_back()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        if len(sys.argv) != 3:
            sys.exit("usage: python -m orderflow.devenv serve HOST:PORT")
        sys.exit(serve(sys.argv[2]))
    main()
